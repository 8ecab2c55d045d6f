"""Published result tables are fedkd's output, pasted byte for byte: regenerate and compare.

Each block (README.md, docs/results.md, docs/results-passes.md, docs/privacy.md) between
``<!-- fedkd report DIR [--columns A,B] [--reference R] [--margin M] -->`` and ``<!-- end report -->``
must equal the tables ``fedkd report DIR ...`` computes from the committed ``DIR/runs.csv``; each
``<!-- fedkd audit FILE -->`` ... ``<!-- end audit -->`` block the table of that audit.json.
A block may also carry ``--tables N`` (the pages' own option, not ``fedkd report``'s): it is then
an excerpt, the report's first N tables with their captions (the README's headline), and the
whole block must be published too.
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
PAGES = ("README.md", "docs/results.md", "docs/results-passes.md", "docs/privacy.md")


def _text() -> str:
    return "".join((ROOT / page).read_text() for page in PAGES)


def _blocks() -> list[tuple[str, str, str]]:
    return BLOCK.findall(_text())


def _audits() -> list[tuple[str, str]]:
    return AUDIT.findall(_text())


def _options(text: str) -> dict[str, str]:
    parts = text.split()
    return dict(zip((p.lstrip("-") for p in parts[::2]), parts[1::2], strict=True))


def first_tables(block: str, n: int) -> str:
    """The block's paragraphs up to and including its n-th table (a paragraph of | rows)."""
    paragraphs = block.rstrip("\n").split("\n\n")
    tables = [i for i, p in enumerate(paragraphs) if p.startswith("|")]
    return "\n\n".join(paragraphs[: tables[n - 1] + 1]) + "\n"


def test_the_pages_publish_every_committed_result():
    published = {folder for folder, _, _ in _blocks()}
    committed = {f"docs/results/{p.name}" for p in (ROOT / "docs" / "results").iterdir() if p.is_dir()}
    assert published == committed


def test_the_readme_headline_is_an_excerpt_of_a_published_block():
    readme = BLOCK.findall((ROOT / "README.md").read_text())
    assert [folder for folder, _, _ in readme] == ["docs/results/fair-mnist"]
    whole = {(folder, options) for folder, options, _ in _blocks() if "--tables" not in options}
    for folder, options, _ in readme:
        assert "--tables" in options  # the front page shows the headline table, not the whole block
        assert (folder, re.sub(r" --tables \S+", "", options)) in whole


@pytest.mark.parametrize("folder, options, published", _blocks())
def test_published_tables_regenerate_from_the_committed_runs(folder, options, published):
    opts = _options(options)
    table = read_runs_csv((ROOT / folder / "runs.csv").read_text())
    columns = opts.get("columns", "algorithm").split(",")
    margin = float(opts["margin"]) if "margin" in opts else None
    block = results_tables(table, columns, opts.get("reference", "local"), margin)
    assert (first_tables(block, int(opts["tables"])) if "tables" in opts else block) == published


def test_an_excerpt_is_a_whole_table_and_its_caption():
    block = "Caption one.\n\n| a |\n|---|\n| 1 |\n\nCaption two:\n\n| b |\n|---|\n| 2 |\n"
    assert first_tables(block, 1) == "Caption one.\n\n| a |\n|---|\n| 1 |\n"
    assert first_tables(block, 2) == block


def test_an_audit_table_is_published():
    assert _audits()


@pytest.mark.parametrize("path, published", _audits())
def test_audit_tables_regenerate_from_the_committed_audit(path, published):
    assert audit_markdown(json.loads((ROOT / path).read_text())) == published
