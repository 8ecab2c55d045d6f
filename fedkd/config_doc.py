"""Every config key with its meaning and allowed values, and the commented TOML built from them.

The comments are the ones written beside each field in ``fedkd/config.py`` (read from its
source, so there is one place to keep them); keys chosen from a registry get the registry's
names appended, so a new algorithm or dataset shows up without editing a comment, and numeric
keys the range declared on their field. The TOML is
what ``fedkd keys --toml`` prints and what every run writes as ``config.toml`` beside its
results: flat top-level keys that ``fedkd run --config`` reads back to the same config.
"""

from __future__ import annotations

import ast
import inspect
import io
import tokenize
from dataclasses import fields
from functools import lru_cache
from typing import get_type_hints

import tomli_w

from fedkd import config as config_module
from fedkd.choices import names
from fedkd.config import ENGINES, LOGS, NEIGHBOUR_RULES, ExperimentConfig, key_ranges


def key_choices() -> dict[str, list[str]]:
    """Keys whose value is one name from a fixed set (a comma list of names for ``models``)."""
    return {
        "dataset": names("dataset"),
        "transfer-dataset": ['""', *names("dataset")],
        "partitioner": names("partitioner"),
        "models": names("model"),
        "algorithm": names("algorithm"),
        "divergence": names("divergence"),
        "neighbour-rule": list(NEIGHBOUR_RULES),
        "engine": list(ENGINES),
        "log": ["none", *LOGS, ",".join(LOGS)],
    }


@lru_cache(maxsize=1)
def field_comments() -> dict[str, str]:
    """kebab-case key -> the comment written beside (or just above) its field in config.py."""
    try:
        source = inspect.getsource(config_module)
    except OSError:  # no source shipped: keys stay usable, only undocumented
        return {}
    comments: dict[int, str] = {}  # line number -> comment text (without '#')
    code_lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
        elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
            code_lines.add(tok.start[0])
    part_names = {get_type_hints(ExperimentConfig)[f.name].__name__ for f in fields(ExperimentConfig)}
    found: dict[str, str] = {}
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.ClassDef) and node.name in part_names):
            continue
        for stmt in node.body:
            if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
                continue
            above: list[str] = []
            line = stmt.lineno - 1
            while line in comments and line not in code_lines:  # a comment block right above
                above.insert(0, comments[line])
                line -= 1
            trailing = [comments[n] for n in range(stmt.lineno, stmt.end_lineno + 1) if n in comments]
            text = " ".join(above + trailing).strip()
            found[stmt.target.id.replace("_", "-")] = text[:-1] if text.endswith(".") else text
    return found


def key_comments() -> dict[str, str]:
    """kebab-case key -> one line: what the value means and which values are allowed."""
    comments = field_comments()
    choices = key_choices()
    ranges = key_ranges()
    described: dict[str, str] = {}
    for key in ExperimentConfig().to_run_config():
        parts = [comments.get(key, "")]
        if key in choices:
            parts.append(f"allowed: {', '.join(choices[key])}")
        if key in ranges:
            parts.append(f"allowed: {ranges[key].describe()}")
        described[key] = "; ".join(p for p in parts if p)
    return described


def section_of() -> dict[str, str]:
    """kebab-case key -> the config section it belongs to (data, model, train, ...)."""
    sections: dict[str, str] = {}
    for section in fields(ExperimentConfig):
        for leaf in fields(get_type_hints(ExperimentConfig)[section.name]):
            sections[leaf.name.replace("_", "-")] = section.name
    return sections


def render_toml(cfg: ExperimentConfig, header: list[str], exclude: tuple[str, ...] = ()) -> str:
    """Flat, commented TOML of ``cfg``: a ``# comment`` line above every key, grouped by section."""
    comments = key_comments()
    sections = section_of()
    lines = [f"# {line}" if line else "#" for line in header]
    current = None
    for key, value in cfg.to_run_config().items():
        if key in exclude:
            continue
        if sections[key] != current:
            current = sections[key]
            lines += ["", f"# -- {current} --"]
        lines += [f"# {comments[key]}", tomli_w.dumps({key: value}).rstrip("\n")]
    return "\n".join(lines) + "\n"
