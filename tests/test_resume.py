"""An interrupted run resumed from its checkpoints ends with the numbers of an uninterrupted run."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from flwr.app import Message
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from clients.client_app import make_client_app
from experiments.cli import main
from experiments.engines import run_inprocess
from fedkd.results_files import load_results
from tests.conftest import tiny_config
from tests.cuts import CUT_ROUND, CUTS, CutClient, cut_and_resume, numbers, resume


class InterruptAt:
    """fedkd's ClientApp, with a Ctrl-C when the given round's train.local reaches a client."""

    def __init__(self, cfg, server_round: int) -> None:
        self.app, self.server_round = make_client_app(cfg), server_round

    def __call__(self, msg: Message, context) -> Message:
        settings = msg.content["config"] if "config" in msg.content else {}
        if msg.metadata.message_type == "train.local" and settings.get("server-round") == self.server_round:
            raise KeyboardInterrupt
        return self.app(msg, context)


ALGORITHMS = {
    "knfu": {"algorithm": "knfu"},
    # partial participation and server state (the latest average and who holds it)
    "fedavg-partial": {"algorithm": "fedavg", "models": "mlp", "num-clients": 4, "fraction": 0.5, "seed": 1},
}
_references: dict[str, list] = {}


def _reference(name, tmp_path_factory):
    if name not in _references:
        whole = tiny_config(
            rounds=4, **{**ALGORITHMS[name], "out-dir": str(tmp_path_factory.mktemp("whole"))}
        )
        _references[name] = numbers(json.loads(json.dumps(run_inprocess(whole).rounds)))
    return _references[name]


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
@pytest.mark.parametrize("phase,when", CUTS, ids=[f"{p}-{w}" for p, w in CUTS])
def test_a_cut_anywhere_in_a_round_resumes_bit_for_bit(tmp_path, tmp_path_factory, algorithm, phase, when):
    reference = _reference(algorithm, tmp_path_factory)
    kept, resumed = cut_and_resume(tmp_path / "cut", ALGORITHMS[algorithm], phase, when)
    assert kept == (CUT_ROUND if when in ("recorded", "switching") else CUT_ROUND - 1)
    assert numbers(resumed) == reference


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.sampled_from(CUTS), rnd=st.integers(1, 4), pid=st.integers(0, 2))
@example(cut=("server", "recorded"), rnd=4, pid=0)  # every round recorded: the resume only finishes
@example(cut=("train.local", "before"), rnd=1, pid=2)  # nothing recorded: it starts over
@example(cut=("train.distill", "after"), rnd=2, pid=0)
def test_a_cut_in_any_round_of_any_client_resumes_bit_for_bit(tmp_path_factory, cut, rnd, pid):
    """The table above cuts client 1 in round 3; here the first, the last, any client."""
    phase, when = cut
    folder = tmp_path_factory.mktemp("cut") / "run"
    kept, resumed = cut_and_resume(folder, ALGORITHMS["knfu"], phase, when, rnd, pid)
    assert kept == (rnd if when in ("recorded", "switching") else rnd - 1)
    assert numbers(resumed) == _reference("knfu", tmp_path_factory)


@pytest.mark.parametrize(
    "overrides",
    [
        {"algorithm": "knfu"},
        # seed 1 draws clients [1, 3] in round 2 and [0, 1] in round 3: client 0 needs the server's
        # saved average in the first resumed round
        {"algorithm": "fedavg", "models": "mlp", "num-clients": 4, "fraction": 0.5, "seed": 1},
        # KT-pFL's coefficient matrix and FedDF's per-architecture models live on the server
        {"algorithm": "kt-pfl"},
        {"algorithm": "feddf", "feddf-server-steps": 5},
    ],
    ids=["knfu", "fedavg-partial", "kt-pfl", "feddf"],
)
def test_resume_matches_an_uninterrupted_run_bit_for_bit(tmp_path, overrides):
    whole = tiny_config(rounds=4, **{**overrides, "out-dir": str(tmp_path / "whole")})
    reference = json.loads(json.dumps(run_inprocess(whole).rounds))  # as written to disk

    cut = whole.with_overrides({"out-dir": str(tmp_path / "cut")})
    with pytest.raises(KeyboardInterrupt):
        run_inprocess(cut, client_app=InterruptAt(cut, server_round=3))
    saved = load_results(tmp_path / "cut")
    assert saved["status"] == "interrupted" and len(saved["rounds"]) == 2
    assert any((tmp_path / "cut" / "checkpoints").iterdir())  # what the resume starts from

    result = CliRunner().invoke(main, ["run", "--resume", str(tmp_path / "cut")])
    assert result.exit_code == 0, result.output
    assert "resuming" in result.output and "round   3/4" in result.output
    resumed = load_results(tmp_path / "cut")
    assert resumed["status"] == "completed"
    assert not (tmp_path / "cut" / "checkpoints").exists()  # a finished run leaves no model files
    assert numbers(resumed["rounds"]) == numbers(reference)


def test_resume_refuses_a_completed_run_or_a_folder_without_results(tmp_path):
    cfg = tiny_config(rounds=1, **{"out-dir": str(tmp_path / "done")})
    run_inprocess(cfg)
    done = CliRunner().invoke(main, ["run", "--resume", str(tmp_path / "done")])
    assert done.exit_code == 2 and "already completed" in done.output
    empty = CliRunner().invoke(main, ["run", "--resume", str(tmp_path)])
    assert empty.exit_code == 2 and "no readable fedkd results.json" in empty.output


@pytest.mark.slow
def test_a_run_cut_in_process_resumes_on_ray_bit_for_bit(tmp_path, tmp_path_factory):
    """Ray's clients pick up the same tagged checkpoints (engine is one of the keys a resume may change)."""
    reference = _reference("knfu", tmp_path_factory)
    folder = tmp_path / "cut"
    cut = tiny_config(rounds=4, **{**ALGORITHMS["knfu"], "out-dir": str(folder)})
    with pytest.raises(KeyboardInterrupt):
        run_inprocess(cut, client_app=CutClient(cut, "train.distill", "after"))
    resumed = resume(folder, "--set", "engine=ray")
    assert resumed["run_config"]["engine"] == "ray"
    assert numbers(resumed["rounds"]) == reference
