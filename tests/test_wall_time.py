"""total_wall_s of a resumed run is the sum over its invocations, not only the last one's."""

from __future__ import annotations

from fedkd.config import ExperimentConfig
from fedkd.results import RunResults


def _round(number: int, wall_s: float, evaluated: bool = True) -> dict:
    return {"round": number, "evaluated": evaluated, "alma": 0.5, "wall_s": wall_s}


def test_a_resumed_run_adds_the_earlier_invocations_time(tmp_path):
    kept = [_round(1, 3.0), _round(2, 4.0), _round(3, 5.0, evaluated=False)]  # killed after round 3
    earlier = {"round": 2, "alma": 0.5, "total_wall_s": 9.0}  # at round 2, as results.json said
    results = RunResults(ExperimentConfig(), tmp_path / "results.json", kept, earlier)
    results.append(_round(4, 0.1))
    total = results.payload["final"]["total_wall_s"]
    assert 9.0 + 5.0 <= total < 9.0 + 5.0 + 5.0  # 9 s to round 2, round 3's 5 s, then this invocation


def test_a_fresh_run_counts_only_itself(tmp_path):
    results = RunResults(ExperimentConfig(), tmp_path / "results.json")
    results.append(_round(1, 0.1))
    assert 0.0 <= results.payload["final"]["total_wall_s"] < 5.0
