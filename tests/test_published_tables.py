"""README result tables are `fedkd report` output, pasted byte for byte: regenerate and compare.

Each README block between ``<!-- fedkd report DIR [--columns A,B] -->`` and ``<!-- end report -->``
must equal the tables computed from the committed ``DIR/runs.csv``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from experiments.tables import read_runs_csv, results_tables

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"<!-- fedkd report (\S+)((?: --\S+ \S+)*) -->\n(.*?)<!-- end report -->", re.S)


def _blocks() -> list[tuple[str, str, str]]:
    return BLOCK.findall((ROOT / "README.md").read_text())


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
    assert results_tables(table, columns, opts.get("reference", "local")) == published
