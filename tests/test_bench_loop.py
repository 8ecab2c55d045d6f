"""bench/common.py's plain loop, the baseline the engines are timed against, computes what the
engines compute: the same fusion weights and client accuracies, round by round."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from experiments.engines import run_inprocess
from tests.conftest import tiny_config

COMMON = Path(__file__).resolve().parents[1] / "bench" / "common.py"  # bench/ is no package
_spec = importlib.util.spec_from_file_location("bench_common", COMMON)
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)

COMPARED = ("round", "weights", "client_acc", "client_global_acc")


def _compared(records: list[dict]) -> list[dict]:
    return [{key: record[key] for key in COMPARED} for record in records]


@pytest.mark.parametrize("algorithm", ["knfu", "kt-pfl", "selective-fd", "fd"])
def test_plain_loop_computes_what_the_inprocess_engine_computes(algorithm):
    """kt-pfl: server state across rounds (its coefficient matrix); selective-fd: withheld rows;
    fd: per-class knowledge, sent down and back up with the next round's local steps."""
    cfg = tiny_config(algorithm=algorithm, rounds=3, workers=1)
    plain: list[dict] = []
    common.plain_loop(cfg, plain.append)
    engine: list[dict] = []
    run_inprocess(cfg, engine.append)
    assert len(plain) == cfg.run.rounds and all(r["client_acc"] for r in plain)
    assert _compared(plain) == _compared(engine)


@pytest.mark.parametrize("algorithm", ["fedavg", "feddf"])
def test_plain_loop_refuses_weight_uploads_by_name(algorithm):
    with pytest.raises(ValueError, match=f"plain loop: {algorithm} uploads .*; supported: "):
        common.plain_loop(tiny_config(algorithm=algorithm, models="mlp"), lambda record: None)


def test_plain_loop_refuses_the_client_mods():
    cfg = tiny_config(compression="topk")
    with pytest.raises(ValueError, match="plain loop: noise and compression"):
        common.plain_loop(cfg, lambda record: None)
