"""The names a user may choose from (datasets, partitioners, models, divergences, algorithms),
known without loading what they name.

The registries import torch, numpy or scipy, which `fedkd keys --toml` and every `--help` should
not wait for. So the names are read from the source that registers them, as text: each
``REGISTRY.register("name")`` call in the registering module; the algorithms' names are their
cards' (fedkd/fusion_cards.py, plain data); installed plugins add the names of their entry points
(package metadata, read without importing the plugin). tests/test_config_doc.py holds each list
equal to its registry's ``names()``.
"""

from __future__ import annotations

import ast
from pathlib import Path

from fedkd.fusion_cards import CARDS
from fedkd.registry import installed_plugins

PLUGIN_KINDS = {"algorithm", "model", "dataset"}  # the registries that take entry-point plugins

PACKAGE = Path(__file__).resolve().parent
REGISTRIES = {  # kind -> (registry variable, the module that registers its entries, helpers that do)
    "dataset": ("DATASETS", "data/sources.py", ("_builtin",)),
    "partitioner": ("PARTITIONERS", "data/partition.py", ()),
    "model": ("MODELS", "models.py", ()),
    "divergence": ("DIVERGENCES", "knowledge.py", ()),
}


def names(kind: str) -> list[str]:
    """Sorted names of ``kind`` (a REGISTRIES key, or ``algorithm``), as ``Registry.names()``."""
    plugins = {ep.name for ep in installed_plugins(kind)} if kind in PLUGIN_KINDS else set()
    if kind == "algorithm":
        return sorted(set(CARDS) | plugins)
    return sorted(_registered(kind) | plugins)


def _registered(kind: str) -> set[str]:
    """The built-in names of ``kind``: the first argument of each ``REGISTRY.register("name")``
    call, or of a registering helper's call, in its registering module."""
    registry, module, helpers = REGISTRIES[kind]
    found = set()
    for node in ast.walk(ast.parse((PACKAGE / module).read_text())):
        if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)):
            continue
        func = node.func
        registers = isinstance(func, ast.Attribute) and func.attr == "register"
        registers = registers and isinstance(func.value, ast.Name) and func.value.id == registry
        if registers or (isinstance(func, ast.Name) and func.id in helpers):
            found.add(node.args[0].value)
    return found
