"""Figures a paper takes unchanged: bands equal to the tables' 95% CI, TrueType fonts in the PDF,
PNGs at --dpi (300 by default), series told apart by colour, marker and line style, and a
figure whose x axis would not vary skipped with a note."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import experiments.figures.sweep as sweep_module
from experiments.cli import main
from experiments.figures.common import PALETTE, new_figure, save, styles_for
from experiments.figures.communication import alma_vs_bytes
from experiments.sweep_report import group_axes, load_runs, run_table, summary
from tests.test_figure_communication import _row as comm_row
from tests.test_figures import _row
from tests.test_report import _sweep, _write_run

SEEDS = (0, 1, 2, 3)


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    rows = [_write_run(tmp_path, alg, seed) for alg in ("local", "knfu") for seed in SEEDS]
    return _sweep(tmp_path, rows)


@pytest.fixture
def notes(fedkd_messages: list[str]) -> list[str]:
    return fedkd_messages


def test_per_round_bands_are_the_tables_confidence_intervals(sweep, monkeypatch):
    kept = {}
    monkeypatch.setattr(sweep_module, "save", lambda fig, path: kept.setdefault("fig", fig) and path)
    rows = [r for r in load_runs(sweep) if "history" in r]
    sweep_module.alma_per_round_figure(rows, group_axes(rows), sweep / "a.png", styles_for(["knfu", "local"]))
    ax = kept["fig"].axes[0]
    table = {row["algorithm"]: row for row in summary(run_table(load_runs(sweep)))}
    for band, alg in zip(ax.collections, ("knfu", "local"), strict=True):  # drawn alphabetically
        vertices = band.get_paths()[0].vertices
        final = vertices[vertices[:, 0] == 2.0, 1]  # the last round: the table's final ALMA
        assert (final.max() + final.min()) / 2 == pytest.approx(table[alg]["alma_mean"])
        assert (final.max() - final.min()) / 2 == pytest.approx(table[alg]["alma_ci95"])
    assert "95% CI" in ax.get_ylabel() and "matched" in ax.get_ylabel()


def test_pdf_figures_embed_no_type3_font(tmp_path):
    fig, ax = new_figure()
    ax.plot([1, 2], [0.5, 0.6], label="knfu ± CI")
    ax.set(xlabel="round", ylabel="ALMA")
    ax.legend()
    pdf = save(fig, tmp_path / "f.png").with_suffix(".pdf").read_bytes()
    assert b"/Subtype /Type3" not in pdf and b"/FontFile2" in pdf  # embedded TrueType


def _dpi(path: Path) -> float:
    with Image.open(path) as image:
        return image.info["dpi"][0]


def test_png_resolution_is_300_dpi_unless_asked(sweep):
    assert CliRunner().invoke(main, ["report", str(sweep)]).exit_code == 0
    assert _dpi(sweep / "figures" / "alma_per_round.png") == pytest.approx(300, abs=1)
    result = CliRunner().invoke(main, ["report", str(sweep), "--dpi", "150"])
    assert result.exit_code == 0, result.output
    assert _dpi(sweep / "figures" / "alma_per_round.png") == pytest.approx(150, abs=1)
    bad = CliRunner().invoke(main, ["report", str(sweep), "--dpi", "0"])
    assert bad.exit_code == 2 and "--dpi" in bad.output


def test_series_differ_in_colour_marker_and_line_style(tmp_path, monkeypatch):
    styles = list(styles_for([f"m{i}" for i in range(8)]).values())
    assert len({s.color for s in styles}) == len({s.marker for s in styles}) == 8
    assert {s.color for s in styles} <= set(PALETTE)
    kept = {}
    monkeypatch.setattr(sweep_module, "save", lambda fig, path: kept.setdefault("fig", fig) and path)
    rows = [_row("dsfl", 80.0), _row("knfu", 80.0)]  # the same bytes: one line on top of the other
    sweep_module.bytes_figure(rows, tmp_path / "b.png", styles_for(["dsfl", "knfu"]))
    lines = kept["fig"].axes[0].get_lines()
    assert np.array_equal(lines[0].get_ydata(), lines[1].get_ydata())
    drawn = {(line.get_color(), line.get_marker(), line.get_linestyle()) for line in lines}
    assert len(drawn) == 2 and len({d[1] for d in drawn}) == 2 and len({d[2] for d in drawn}) == 2
    assert all(line.get_markerfacecolor() == "none" for line in lines)  # hollow: the lower one shows


def test_a_figure_whose_x_axis_does_not_vary_is_skipped_with_a_note(tmp_path, notes):
    same = [comm_row("knfu", 0, 0.7, [1000, 1000]), comm_row("dsfl", 0, 0.6, [1000, 1000])]
    assert alma_vs_bytes(same, ["alpha", "algorithm", "seed"], tmp_path / "b.png") is None
    assert not (tmp_path / "b.png").exists()
    assert any("ALMA vs bytes skipped" in note for note in notes)
    one_round = _row("knfu", 10.0)
    one_round["history"]["rounds"] = one_round["history"]["rounds"][:1]
    assert sweep_module.alma_per_round_figure([one_round], ["algorithm"], tmp_path / "r.png", {}) is None
    assert any("ALMA per round skipped" in note and "\n" not in note for note in notes)
