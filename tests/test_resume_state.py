"""A resume is exact for every algorithm that carries something across rounds besides the clients'
models (the server's averaged weights, KT-pFL's coefficient matrix, FedMD's pretraining and its
fresh subset of the transfer rows each round): cut after the server updated its state but before
the round was recorded, or while switching to the round's checkpoints, the resumed run's every
round record equals an uninterrupted run's, all but the timings."""

from __future__ import annotations

import pytest

from experiments.engines import run_inprocess
from fedkd.fusion import FUSIONS
from fedkd.results_files import load_results
from tests.conftest import exercising, tiny_config
from tests.cuts import cut_and_resume

ROUNDS = 3
TIMINGS = ("wall_s", "compute_s", "server_compute_s")  # the only fields a resume may change
# fused (the server state updated), not recorded; recorded, switching checkpoints (slow: the table
# in tests/test_resume.py cuts there for the other algorithms)
CUTS = [
    pytest.param("train.distill", "before", id="fused-not-recorded"),
    pytest.param("server", "switching", id="switching", marks=pytest.mark.slow),
]


def _carries_state(algorithm: str) -> bool:
    cfg = tiny_config(**exercising(algorithm))
    fusion = FUSIONS.get(algorithm)
    return (
        fusion.card.uploads_weights
        or bool(fusion.start(cfg))
        or fusion.pretrain_epochs(cfg) > 0
        or any(fusion.transfer_rows(cfg, r) is not None for r in range(1, ROUNDS + 1))
    )


STATEFUL = [name for name in FUSIONS.names() if _carries_state(name)]
_references: dict[str, list] = {}


def _exact(rounds: list[dict]) -> list[dict]:
    """Round records as the run folder holds them, without the timings."""
    return [{k: v for k, v in r.items() if k not in TIMINGS} for r in rounds]


def _reference(algorithm: str, tmp_path_factory) -> list[dict]:
    if algorithm not in _references:
        folder = tmp_path_factory.mktemp("whole")
        run_inprocess(tiny_config(rounds=ROUNDS, **{**exercising(algorithm), "out-dir": str(folder)}))
        _references[algorithm] = _exact(load_results(folder)["rounds"])
    return _references[algorithm]


def test_the_stateful_algorithms_are_found():
    """The selection above is what makes this file test anything: it finds at least the server
    state, the weight uploads and the row subsets of today's registry."""
    cards = [FUSIONS.get(name).card for name in STATEFUL]
    assert any(card.uploads_weights for card in cards) and any(card.personalised for card in cards)
    assert len(STATEFUL) >= 3


@pytest.mark.parametrize("algorithm", STATEFUL)
@pytest.mark.parametrize("phase,when", CUTS)
def test_a_stateful_algorithm_cut_and_resumed_repeats_every_round_exactly(
    tmp_path, tmp_path_factory, algorithm, phase, when
):
    kept, resumed = cut_and_resume(tmp_path / "cut", exercising(algorithm), phase, when, rnd=2, rounds=ROUNDS)
    assert kept == (2 if when == "switching" else 1)
    assert _exact(resumed) == _reference(algorithm, tmp_path_factory)
