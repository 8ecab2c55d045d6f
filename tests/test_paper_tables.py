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
from fedkd.config import ExperimentConfig
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


def test_the_setting_names_the_federation_then_keys_off_their_defaults_the_budget_and_the_seeds():
    configs = [
        {"dataset": "digits", "alpha": a, "num-clients": 10, "rounds": 20, "seed": s, "val-fraction": 0.2}
        for a in (0.1, 1)
        for s in (0, 1)
    ]
    full = [{**ExperimentConfig().to_run_config(), **c} for c in configs]
    line = setting_line(full, [0, 1, 0, 1], {"alpha", "seed"})
    # dataset, clients, models, rounds and partitioner named at their defaults too; alpha varies
    # (an axis: not named); val-fraction is off its default; seed is the seeds
    assert line == (
        "Setting: dataset=digits, num-clients=10, models=mlp,cnn-s,lenet5, rounds=20, partitioner=dirichlet,"
        " val-fraction=0.2; budget: local-epochs=3, distill-epochs=2, revisit-epochs=1, budget-match=steps;"
        " seeds 0, 1 (2)."
    )
    assert seeds_text([3, 0, 1, 2, 2]) == "0-3 (4)" and seeds_text([1, 4, 7]) == "1, 4, 7 (3)"


def test_tuned_settings_are_said_to_be_tuned_not_listed_value_by_value():
    base = ExperimentConfig().to_run_config()
    lr = {("local", 0.1): 0.003, ("local", 1.0): 0.01, ("knfu", 0.1): 0.002, ("knfu", 1.0): 0.004}
    configs = [
        {
            **base,
            "algorithm": m,
            "alpha": a,
            "seed": s,
            "learning-rate": lr[m, a],
            "beta": 5.0 if m == "knfu" else 10.0,
        }
        for (m, a) in lr
        for s in (0, 1)
    ]
    line = setting_line(configs, [c["seed"] for c in configs], {"algorithm", "alpha", "seed"})
    tuned = "hyperparameters tuned on validation per method and cell (tuned.toml): beta, learning-rate;"
    assert tuned in line and "learning-rate=" not in line and "beta=" not in line
    assert line.startswith("Setting: dataset=digits, num-clients=10, models=mlp,cnn-s,lenet5, rounds=10,")
    assert "alpha=" not in line  # an axis
    one_cell = [c for c in configs if c["alpha"] == 0.1]
    assert "tuned on validation per method (tuned.toml): beta, learning-rate;" in setting_line(
        one_cell, [0, 1], {"algorithm", "seed"}
    )
    assert "tuned" not in setting_line(
        configs, [0, 1], {"algorithm", "alpha", "seed", "learning-rate", "beta"}
    )


def test_latex_report_is_booktabs_with_the_setting_marks_and_a_footnote(sweep):
    out = _latex(sweep)
    headline = out[: out.index(r"\end{table}")]
    for command in (r"\begin{table}", r"\toprule", r"\midrule", r"\bottomrule", r"\label{tab:"):
        assert command in headline
    assert r"\hline" not in out  # booktabs rules only
    caption = re.search(r"\\caption\{(.*)\}\n", headline).group(1)
    assert "Setting: dataset=digits, num-clients=3, models=mlp,cnn-s,lenet5, rounds=10," in caption
    assert "algorithm" not in caption and "tuned" not in caption  # an axis; nothing else varies
    assert "alpha=0.5" in caption and "seeds 0-3 (4)" in caption  # a Dirichlet split's alpha, named
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


def test_a_key_added_after_older_runs_is_not_mistaken_for_a_tuned_one():
    """Runs recorded before projection-width existed lack it; they ran at its neutral value, so a
    sweep that adds runs which hold it does not call it tuned."""
    old = {k: v for k, v in ExperimentConfig().to_run_config().items() if k != "projection-width"}
    new = {**old, "projection-width": 0, "algorithm": "fd"}
    line = setting_line([old, new], [0, 0], ["algorithm", "seed"])
    assert "tuned" not in line and "projection-width" not in line
    assert "projection-width" in setting_line(
        [old, {**new, "projection-width": 64}], [0, 0], ["algorithm", "seed"]
    )
