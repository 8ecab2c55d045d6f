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
import textwrap
import tokenize
from dataclasses import fields
from functools import lru_cache
from typing import get_type_hints

import tomli_w

from fedkd.choices import names
from fedkd.config import (
    ENGINES,
    FUSION_PARTS,
    LOGS,
    NEIGHBOUR_RULES,
    ExperimentConfig,
    FusionConfig,
    key_ranges,
    plugin_option,
    sections,
)


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


def documented_classes() -> list[type]:
    """The dataclasses whose fields are config keys: each section's, the fusion section's parts."""
    classes: list[type] = []
    for section in sections():
        part = get_type_hints(ExperimentConfig)[section.name]
        classes += list(FUSION_PARTS) if part is FusionConfig else [part]
    return classes


@lru_cache(maxsize=1)
def field_comments() -> dict[str, str]:
    """kebab-case key -> the comment written beside (or just above) its field, in the source of
    the dataclass that declares it (config.py's sections, fusion_cards.py's settings)."""
    found: dict[str, str] = {}
    for cls in documented_classes():
        found.update(class_comments(cls))
    return found


def class_comments(cls: type) -> dict[str, str]:
    """kebab-case key -> the comment beside or right above each field of ``cls`` (none without source)."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # no source shipped: keys stay usable, only undocumented
        return {}
    comments: dict[int, str] = {}  # line number -> comment text (without '#')
    code_lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
        elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
            code_lines.add(tok.start[0])
    found: dict[str, str] = {}
    node = ast.parse(source).body[0]
    for stmt in node.body if isinstance(node, ast.ClassDef) else ():
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
    found: dict[str, str] = {}
    for section in sections():
        for leaf in fields(get_type_hints(ExperimentConfig)[section.name]):
            found[leaf.name.replace("_", "-")] = section.name
    return found


def render_toml(cfg: ExperimentConfig, header: list[str], exclude: tuple[str, ...] = ()) -> str:
    """Flat, commented TOML of ``cfg``: a ``# comment`` line above every key, grouped by section."""
    comments = key_comments()
    section = section_of()
    lines = [f"# {line}" if line else "#" for line in header]
    current = None
    for key, value in cfg.to_run_config().items():
        if key in exclude:
            continue
        if section.get(key, "options") != current:
            current = section.get(key, "options")
            lines += ["", f"# -- {current} --"]
        lines += [f"# {comments.get(key) or option_comment(key)}", tomli_w.dumps({key: value}).rstrip("\n")]
    return "\n".join(lines) + "\n"


def option_comment(key: str) -> str:
    """A plugin algorithm's key: its comment, range and algorithm (the plugin's source)."""
    option = plugin_option(key)
    if option is None:
        return "unknown key"
    rule = option.leaf.metadata.get("allowed")
    parts = [class_comments(option.settings).get(key, ""), f"allowed: {rule.describe()}" if rule else ""]
    return "; ".join(p for p in [*parts, f"algorithm {option.algorithm} (a plugin)"] if p)
