"""The names a user may choose from (datasets, partitioners, models, divergences, algorithms),
known without loading what they name.

The registries import torch, numpy or scipy, which `fedkd keys --toml` and every `--help` should
not wait for. So the names are read from the source that registers them, as text: each
``REGISTRY.register("name")`` call in the registering module; the algorithms' names are their
cards' (fedkd/fusion_cards.py, plain data). tests/test_config_doc.py holds each list equal to its
registry's ``names()``.
"""

from __future__ import annotations

import ast
from pathlib import Path

from fedkd.fusion_cards import CARDS

PACKAGE = Path(__file__).resolve().parent
REGISTRIES = {  # kind -> (registry variable, the module that registers its entries)
    "dataset": ("DATASETS", "data/sources.py"),
    "partitioner": ("PARTITIONERS", "data/partition.py"),
    "model": ("MODELS", "models.py"),
    "divergence": ("DIVERGENCES", "knowledge.py"),
}


def names(kind: str) -> list[str]:
    """Sorted names of ``kind`` (a REGISTRIES key, or ``algorithm``), as ``Registry.names()``."""
    if kind == "algorithm":
        return sorted(CARDS)
    registry, module = REGISTRIES[kind]
    found = set()
    for node in ast.walk(ast.parse((PACKAGE / module).read_text())):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "register"
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == registry
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            found.add(node.args[0].value)
    return sorted(found)
