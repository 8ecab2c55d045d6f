"""Published result tables are fedkd's output, pasted byte for byte: regenerate and compare.

Each block (README.md, docs/privacy.md) between ``<!-- fedkd report DIR [--columns A,B] -->`` and
``<!-- end report -->`` must equal the tables computed from the committed ``DIR/runs.csv``; each
``<!-- fedkd audit FILE -->`` ... ``<!-- end audit -->`` block the table of that audit.json.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from experiments.audit_table import audit_markdown
from experiments.tables import read_runs_csv, results_tables

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"<!-- fedkd report (\S+)((?: --\S+ \S+)*) -->\n(.*?)<!-- end report -->", re.S)
AUDIT = re.compile(r"<!-- fedkd audit (\S+) -->\n(.*?)<!-- end audit -->", re.S)
PAGES = ("README.md", "docs/results-passes.md", "docs/privacy.md")


def _text() -> str:
    return "".join((ROOT / page).read_text() for page in PAGES)


def _blocks() -> list[tuple[str, str, str]]:
    return BLOCK.findall(_text())


def _audits() -> list[tuple[str, str]]:
    return AUDIT.findall(_text())


def _options(text: str) -> dict[str, str]:
    parts = text.split()
    return dict(zip((p.lstrip("-") for p in parts[::2]), parts[1::2], strict=True))


def test_the_readme_publishes_every_committed_result():
    published = {folder for folder, _, _ in _blocks()}
    committed = {f"docs/results/{p.name}" for p in (ROOT / "docs" / "results").iterdir() if p.is_dir()}
    assert published == committed


@pytest.mark.parametrize("folder, options, published", _blocks())
def test_readme_tables_regenerate_from_the_committed_runs(folder, options, published):
    opts = _options(options)
    table = read_runs_csv((ROOT / folder / "runs.csv").read_text())
    columns = opts.get("columns", "algorithm").split(",")
    margin = float(opts["margin"]) if "margin" in opts else None
    assert results_tables(table, columns, opts.get("reference", "local"), margin) == published


def test_an_audit_table_is_published():
    assert _audits()


@pytest.mark.parametrize("path, published", _audits())
def test_audit_tables_regenerate_from_the_committed_audit(path, published):
    assert audit_markdown(json.loads((ROOT / path).read_text())) == published
