"""The ALMA-vs-bytes figure of `fedkd report`: one point per method and compression level."""

from __future__ import annotations

import pytest
from PIL import Image

from experiments.figures.communication import alma_vs_bytes, comm_points, compression_label


def _row(algorithm: str, seed: int, alma: float, up: list[int], down: int = 100, **config) -> dict:
    flat = {
        "algorithm": algorithm,
        "compression": "none",
        "compression-k": 2,
        "compression-bits": 8,
        **config,
    }
    return {
        "axes": {"alpha": 0.5, "algorithm": algorithm, "seed": seed, "compression": flat["compression"]},
        "config": flat,
        "final": {"alma": alma},
        "history": {"rounds": [{"bytes_up": b, "bytes_down": down} for b in up]},
    }


ROWS = [
    _row("knfu", 0, 0.70, [1000, 3000]),
    _row("knfu", 1, 0.80, [2000, 2000]),
    _row("knfu", 0, 0.60, [100, 100], compression="quant", **{"compression-bits": 2}),
    _row("kt-pfl", 0, 0.75, [500, 500], compression="topk", **{"compression-k": 1}),
    _row("local", 0, 0.65, [0, 0], down=0),
]


def test_compression_labels():
    assert compression_label({"compression": "none"}) == "float32"
    assert compression_label({"compression": "topk", "compression-k": 1}) == "top-1"
    assert compression_label({"compression": "quant", "compression-bits": 4}) == "4-bit"


def test_points_golden_mean_over_rounds_then_seeds():
    points = {(p["algorithm"], p["compression"]): p for p in comm_points(ROWS, total=False)}
    knfu = points[("knfu", "float32")]
    assert knfu["bytes"] == 2000.0  # seed 0: mean(1000, 3000) = 2000, seed 1: 2000
    assert knfu["alma"] == pytest.approx(0.75)
    assert knfu["alma_ci95"] == pytest.approx(12.706204736174698 * 0.05)  # the tables' t-interval
    assert knfu["runs"] == 2
    assert points[("knfu", "2-bit")]["bytes"] == 100.0 and points[("kt-pfl", "top-1")]["alma"] == 0.75
    assert points[("local", "float32")]["bytes"] == 0.0
    total = {(p["algorithm"], p["compression"]): p["bytes"] for p in comm_points(ROWS, total=True)}
    assert total[("knfu", "float32")] == 2100.0  # up + down


def test_figure_is_written_and_skipped_when_nothing_is_sent(tmp_path):
    path = alma_vs_bytes(ROWS, ["alpha", "algorithm", "seed", "compression"], tmp_path / "alma_vs_bytes.png")
    assert path is not None
    with Image.open(path) as image:
        image.verify()
        assert image.size[0] >= 800
    assert path.with_suffix(".pdf").stat().st_size > 1000
    nothing = [r for r in ROWS if r["axes"]["algorithm"] == "local"]
    assert alma_vs_bytes(nothing, ["algorithm", "seed"], tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()
