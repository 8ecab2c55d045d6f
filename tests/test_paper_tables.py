"""`fedkd report --format latex`: booktabs floats whose caption names the fixed setting, with
significance marks and a footnote on the test; the Markdown tables carry the same setting line."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from experiments.cli import main
from experiments.setting import seeds_text, setting_line
from tests.test_report import _sweep, _write_run

SEEDS = (0, 1, 2, 3)


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    rows = [_write_run(tmp_path, alg, seed) for alg in ("local", "knfu", "dsfl") for seed in SEEDS]
    return _sweep(tmp_path, rows)


def _latex(sweep: Path) -> str:
    result = CliRunner().invoke(main, ["report", str(sweep), "--format", "latex"])
    assert result.exit_code == 0, result.output
    return result.output


def test_the_setting_names_fixed_keys_off_their_defaults_the_budget_and_the_seeds():
    configs = [
        {"dataset": "mnist", "alpha": a, "num-clients": 10, "rounds": 20, "seed": s}
        for a in (0.1, 1)
        for s in (0, 1)
    ]
    line = setting_line(configs, [0, 1, 0, 1])
    # mnist differs from the default (digits); 10 clients is the default; alpha varies; seed is the seeds
    assert line == "Setting: dataset=mnist; budget: rounds=20; seeds 0, 1 (2)."
    assert seeds_text([3, 0, 1, 2, 2]) == "0-3 (4)" and seeds_text([1, 4, 7]) == "1, 4, 7 (3)"


def test_latex_report_is_booktabs_with_the_setting_marks_and_a_footnote(sweep):
    out = _latex(sweep)
    headline = out[: out.index(r"\end{table}")]
    for command in (r"\begin{table}", r"\toprule", r"\midrule", r"\bottomrule", r"\label{tab:"):
        assert command in headline
    assert r"\hline" not in out  # booktabs rules only
    caption = re.search(r"\\caption\{(.*)\}\n", headline).group(1)
    assert "num-clients=3" in caption  # fixed and not the default (10)
    assert "algorithm" not in caption and "dataset" not in caption  # varies / is the default
    assert "rounds=10" in caption and "seeds 0-3 (4)" in caption
    rows = [line for line in headline.splitlines() if line.endswith(r"\\")]
    assert {line.count("&") for line in rows} == {3}  # no cell axis: seeds and three methods
    knfu = rows[1].removesuffix(r" \\").split(" & ")[3]  # header: seeds, local, dsfl, knfu
    assert knfu.startswith(r"\textbf{") and knfu.endswith(r"$^{\uparrow}$")  # best and higher than local
    assert r"$^{\uparrow}$" not in rows[1].split(" & ")[2]  # dsfl: 0.003 apart, not significant
    footnote = headline[headline.index(r"\footnotesize") :]
    assert "Holm-adjusted over 2 comparisons" in footnote and "paired $t$-test" in footnote
    assert r"\approx" in footnote  # the equivalence mark, with the default margin


def test_markdown_tables_carry_the_same_setting_line(sweep):
    out = _latex(sweep)
    caption = re.search(r"\\caption\{(.*)\}\n", out).group(1)
    setting = (sweep / "results.md").read_text().splitlines()[0]
    assert setting.startswith("Setting: ") and caption.endswith(setting)
    assert (sweep / "summary.md").read_text().startswith(setting + "\n")
    assert (sweep / "results.tex").read_text() in out


def test_a_bad_format_is_a_one_line_usage_error(sweep):
    result = CliRunner().invoke(main, ["report", str(sweep), "--format", "html"])
    assert result.exit_code == 2 and "'html'" in result.output and "latex" in result.output


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="no TeX engine: the structure tests stand")
def test_latex_report_compiles(sweep, tmp_path):
    _latex(sweep)
    document = tmp_path / "paper.tex"
    document.write_text(
        "\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n"
        + (sweep / "results.tex").read_text()
        + "\\end{document}\n"
    )
    done = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", document.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:]
    assert (tmp_path / "paper.pdf").stat().st_size > 0
    assert "Overfull" not in done.stdout  # the tables fit the text width
