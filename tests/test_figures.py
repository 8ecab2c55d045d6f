"""Figures fit for a paper: no titles inside (the caption names the run and round), integer
client ticks, legends outside the data, accuracy not cut at 1, architectures in the legend, a kB
axis that is linear unless the range needs a log one, class names on the partition heatmap."""

from __future__ import annotations

import numpy as np
import pytest

import experiments.figures.partition as partition_module
import experiments.figures.run as run_module
import experiments.figures.sweep as sweep_module
import experiments.figures.weights as weights_module
from experiments.figures.common import styles_for
from fedkd.config import ExperimentConfig, as_dict
from fedkd.data.sources import FASHION_NAMES, load_dataset

K = 12  # clients: every id gets its own tick


@pytest.fixture
def drawn(monkeypatch):
    """Figures as drawn, instead of written to disk: name of the file -> matplotlib Figure."""
    figures = {}

    def keep(fig, path):
        fig.canvas.draw()
        figures[path.name] = fig
        return path

    for module in (run_module, sweep_module, weights_module, partition_module):
        monkeypatch.setattr(module, "save", keep)
    return figures


def _history(algorithm: str = "knfu", kb_up: float = 10.0) -> dict:
    cfg = ExperimentConfig().with_overrides({"num-clients": K, "algorithm": algorithm})
    rounds = []
    for r in (1, 2, 3):
        weights = np.full((K, K), 0.4 / K) + 0.6 * np.eye(K)
        acc = {str(p): 1.0 if p == 0 else 0.5 + 0.02 * p for p in range(K)}  # client 0 is perfect
        rounds.append(
            {
                "round": r,
                "evaluated": True,
                "alma": 0.8,
                "alma_min": 0.5,
                "global_acc": 0.6,
                "client_acc": acc,
            }
            | {"weights": weights.tolist(), "bytes_up": kb_up * 1e3, "bytes_down": kb_up * 1e3}
        )
    return {"config": as_dict(cfg), "rounds": rounds}


def _outside(fig, ax) -> bool:
    """The axes' legend (or the figure's) lies right of the data area."""
    legend = ax.get_legend() or fig.legends[0]
    renderer = fig.canvas.get_renderer()
    return legend.get_window_extent(renderer).x0 >= ax.get_window_extent(renderer).x1


def _untitled(fig) -> bool:
    return not fig._suptitle and not any(ax.get_title() for ax in fig.axes)


def test_run_figures(drawn, tmp_path):
    names = run_module.run_figures(_history(), tmp_path)
    weights = drawn["weights.png"].axes[0]
    assert [t.get_text() for t in weights.get_xticklabels()] == [str(i) for i in range(K)]
    assert [t.get_text() for t in weights.get_yticklabels()] == [str(i) for i in range(K)]
    assert all(_untitled(fig) for fig in drawn.values())  # captions are the paper's
    assert any(name.startswith("weights (knfu on digits") and "round 3" in name for name in names)
    clients = drawn["client_accuracy.png"].axes[0]
    assert clients.get_ylim()[1] > 1.0  # the perfect client is not cut off
    labels = [t.get_text() for t in clients.get_legend().get_texts()]
    assert labels[:3] == ["client 0 (mlp)", "client 1 (cnn-s)", "client 2 (lenet5)"]
    for name in ("client_accuracy.png", "bytes_per_round.png", "accuracy_per_round.png"):
        assert _outside(drawn[name], drawn[name].axes[0]), name


def test_weights_of_a_partial_round_are_labelled_with_its_participants(drawn, tmp_path):
    from experiments.figures.weights import weights_figure

    record = {"round": 2, "weights": np.eye(3).tolist(), "participants": [1, 4, 7]}
    weights_figure(record, tmp_path / "weights.png")
    ax = drawn["weights.png"].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "4", "7"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["1", "4", "7"]


def _row(algorithm: str, kb: float, alpha: float = 0.5) -> dict:
    history = _history(algorithm, kb_up=kb / 2)
    return {
        "axes": {"algorithm": algorithm, "alpha": alpha},
        "config": {"algorithm": algorithm},
        "history": history,
    }


@pytest.mark.parametrize(
    "kb, scale",
    [({"knfu": 80.0, "dsfl": 160.0, "local": 0.0}, "linear"), ({"knfu": 20.0, "fedavg": 1100.0}, "log")],
)
def test_sweep_bytes_axis_is_linear_unless_the_range_needs_log(drawn, tmp_path, kb, scale):
    rows = [_row(alg, value) for alg, value in kb.items()]
    sweep_module.bytes_figure(rows, tmp_path / "bytes_per_round.png", styles_for(list(kb)))
    ax = drawn["bytes_per_round.png"].axes[0]
    assert ax.get_yscale() == scale and ("log scale" in ax.get_ylabel()) == (scale == "log")
    assert "kB" in ax.get_ylabel() and _outside(drawn["bytes_per_round.png"], ax)
    ticks = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert ticks and not any("10^" in t or "$" in t for t in ticks)  # plain numbers: 20, 50, 1,000
    if scale == "linear":
        assert ax.get_ylim()[0] == 0 and ax.get_ylim()[1] >= 160
        assert "local (sends nothing)" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_sweep_weights_caption_names_the_algorithm_once(drawn, tmp_path, monkeypatch):
    monkeypatch.setattr(sweep_module, "run_partition_figure", lambda *args: tmp_path / "partition.png")
    names = sweep_module.chosen_run_figures(_row("knfu", 10.0, alpha=0.1), tmp_path)
    caption = next(name for name in names if name.startswith("weights"))
    assert caption.count("knfu") == 1 and "alpha=0.1" in caption and "round 3" in caption
    assert _untitled(drawn["weights.png"])


def test_partition_heatmap_names_the_classes(drawn, tmp_path):
    hist = np.arange(3 * 10).reshape(3, 10)
    partition_module.partition_figure(hist, tmp_path / "partition.png", FASHION_NAMES)
    ax = drawn["partition.png"].axes[0]
    names = [t.get_text() for t in ax.get_xticklabels()]
    assert names[0] == "T-shirt/top" and names[-1] == "Ankle boot"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0", "1", "2"]
    assert partition_module.class_labels(load_dataset("digits").class_names, 10)[7] == "7"
    assert partition_module.class_labels((), 4) == ["0", "1", "2", "3"]


def _stepped_row(algorithm: str, seed: int, private: int, transfer: int, matched: list[float]) -> dict:
    """A run whose rounds record step counts (clients 0..2) and the matched headline ALMA."""
    row = _row(algorithm, 10.0)
    row["axes"]["seed"] = seed
    for record, value in zip(row["history"]["rounds"], matched, strict=True):
        record["private_steps"] = {str(p): private + p for p in range(3)}  # mean: private + 1
        record["transfer_steps"] = {str(p): transfer for p in range(3)}
        record["alma_matched"] = value
    return row


def test_alma_against_optimiser_steps_per_method(drawn, tmp_path):
    rows = [
        _stepped_row("local", 0, 39, 0, [0.5, 0.6, 0.7]),
        _stepped_row("local", 1, 39, 0, [0.6, 0.7, 0.8]),
        _stepped_row("knfu", 0, 9, 10, [0.7, 0.7, 0.7]),
        _stepped_row("knfu", 1, 9, 10, [0.7, 0.7, 0.7]),
    ]
    path = sweep_module.alma_vs_steps_figure(
        rows, ["algorithm", "alpha", "seed"], tmp_path / "s.png", styles_for(["local", "knfu"])
    )
    ax = drawn["s.png"].axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert path == tmp_path / "s.png" and set(lines) == {"local", "knfu"}
    assert list(lines["local"].get_xdata()) == [40.0, 80.0, 120.0]  # cumulative, per client
    assert list(lines["knfu"].get_xdata()) == [20.0, 40.0, 60.0]
    assert list(lines["local"].get_ydata()) == pytest.approx([0.55, 0.65, 0.75])  # headline, seed mean
    band = ax.collections[1].get_paths()[0].vertices[:, 1]  # local's (drawn after knfu)
    half = 12.706204736174698 * 0.05  # t(0.975, 1) * std / sqrt(2), std = 0.1 / sqrt(2)
    assert band.max() == pytest.approx(0.75 + half) and "steps" in ax.get_xlabel()
    assert "matched" in ax.get_ylabel()


def test_alma_against_steps_is_skipped_for_runs_without_step_counts(drawn, tmp_path):
    rows = [_row("local", 10.0), _row("knfu", 10.0)]
    assert sweep_module.alma_vs_steps_figure(rows, ["algorithm"], tmp_path / "s.png", {}) is None
    assert "s.png" not in drawn
