"""An interrupted run resumed from its checkpoints ends with the numbers of an uninterrupted run."""

from __future__ import annotations

import json
import threading

import pytest
from click.testing import CliRunner
from flwr.app import Message
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from clients.client_app import make_client_app
from clients.records import partition_id
from experiments.cli import main
from experiments.engines import run_inprocess
from fedkd import checkpoints, client_steps, training
from fedkd import results as results_module
from fedkd.results_files import json_line, load_results
from server.strategy import KnowledgeFusionStrategy
from tests.conftest import tiny_config


class InterruptAt:
    """fedkd's ClientApp, with a Ctrl-C when the given round's train.local reaches a client."""

    def __init__(self, cfg, server_round: int) -> None:
        self.app, self.server_round = make_client_app(cfg), server_round

    def __call__(self, msg: Message, context) -> Message:
        settings = msg.content["config"] if "config" in msg.content else {}
        if msg.metadata.message_type == "train.local" and settings.get("server-round") == self.server_round:
            raise KeyboardInterrupt
        return self.app(msg, context)


def _numbers(rounds):
    return [
        (r["round"], r["participants"], r["alma"], r["global_acc"], r["client_acc"], r["weights"])
        for r in rounds
    ]


def _resume(folder, *options):
    result = CliRunner().invoke(main, ["run", "--resume", str(folder), *options])
    assert result.exit_code == 0, result.output
    resumed = load_results(folder)
    assert resumed["status"] == "completed"
    assert not (folder / "checkpoints").exists()  # a finished run leaves no model files
    return resumed


# -- interrupting round 3 of 4 at every point of the round ------------------------------------
CUT_ROUND, CUT_PID = 3, 1
_phase = threading.local()  # the message a client thread is handling: (type, round)


class CutClient:
    """fedkd's ClientApp, cut (Ctrl-C) in a client: before or after its handler, or mid-way
    through its training loop (a step taken, the model changed)."""

    def __init__(self, cfg, phase: str, when: str, rnd: int = CUT_ROUND, pid: int = CUT_PID) -> None:
        self.app, self.phase, self.when, self.rnd, self.pid = make_client_app(cfg), phase, when, rnd, pid

    def __call__(self, msg: Message, context) -> Message:
        settings = msg.content["config"] if "config" in msg.content else {}
        here = (msg.metadata.message_type, settings.get("server-round"))
        target = here == (self.phase, self.rnd) and partition_id(context) == self.pid
        if target and self.when == "before":
            raise KeyboardInterrupt
        _phase.current = here if target else None
        try:
            reply = self.app(msg, context)
        finally:
            _phase.current = None
        if target and self.when == "after":  # the handler's work is done (a distil: its checkpoint)
            raise KeyboardInterrupt
        return reply


def _cut_mid_loop(monkeypatch) -> None:
    """In the armed client's training loops: Ctrl-C in the second mini-batch (one step taken);
    where a phase has none, before it scores its model."""
    real = training._fit

    def cut_in_second_batch(model, inputs, targets, loss_fn, *args):
        if getattr(_phase, "current", None) is None:
            return real(model, inputs, targets, loss_fn, *args)
        batches = iter(range(2))

        def loss(*tensors):
            if next(batches, None) is None:
                raise KeyboardInterrupt
            return loss_fn(*tensors)

        return real(model, inputs, targets, loss, *args)

    monkeypatch.setattr(training, "_fit", cut_in_second_batch)
    real_evaluate = client_steps.evaluate_client

    def cut_before_scoring(*args):  # a distil phase without training loops (weight averaging)
        if getattr(_phase, "current", None) is not None:
            raise KeyboardInterrupt
        return real_evaluate(*args)

    monkeypatch.setattr(client_steps, "evaluate_client", cut_before_scoring)


def _cut_server(monkeypatch, point: str, rnd: int = CUT_ROUND) -> None:
    """Cut on the server: in fusion, or around recording the round and switching checkpoints."""
    if point == "fusion":
        real_combine = KnowledgeFusionStrategy._combine

        def combine(self, out, participants, server_round):
            if server_round == rnd:
                raise KeyboardInterrupt
            return real_combine(self, out, participants, server_round)

        monkeypatch.setattr(KnowledgeFusionStrategy, "_combine", combine)
    elif point in ("before-record", "torn-record", "recorded"):
        real_append = results_module.append_json_line

        def append(path, record):
            if record["round"] != rnd:
                return real_append(path, record)
            if point == "torn-record":  # a kill mid-write: half the line reaches the disk
                line = json_line(record)
                with open(path, "a") as handle:
                    handle.write(line[: len(line) // 2])
            elif point == "recorded":
                real_append(path, record)
            raise KeyboardInterrupt

        monkeypatch.setattr(results_module, "append_json_line", append)
    elif point == "switching":  # current.json says round 3; the files it supersedes are still there
        real_retire = checkpoints.retire_older

        def retire(folder, recorded):
            if recorded == rnd:
                raise KeyboardInterrupt
            return real_retire(folder, recorded)

        monkeypatch.setattr(checkpoints, "retire_older", retire)


CUTS = [
    ("train.local", "before"),
    ("train.local", "mid"),
    ("train.local", "after"),
    ("server", "fusion"),
    ("train.distill", "before"),
    ("train.distill", "mid"),
    ("train.distill", "after"),
    ("server", "before-record"),
    ("server", "torn-record"),
    ("server", "recorded"),
    ("server", "switching"),
]
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
        _references[name] = _numbers(json.loads(json.dumps(run_inprocess(whole).rounds)))
    return _references[name]


def _cut_and_resume(folder, algorithm, phase, when, rnd=CUT_ROUND, pid=CUT_PID):
    """Run ``algorithm`` for 4 rounds, cut it at (phase, when) of round ``rnd``, resume it with
    the CLI; returns the rounds kept by the cut and the resumed run's numbers."""
    cut = tiny_config(rounds=4, **{**ALGORITHMS[algorithm], "out-dir": str(folder)})
    client_app = CutClient(cut, phase, when, rnd, pid) if phase != "server" else make_client_app(cut)
    with pytest.MonkeyPatch.context() as patch:
        _cut_mid_loop(patch)
        if phase == "server":
            _cut_server(patch, when, rnd)
        with pytest.raises(KeyboardInterrupt):
            run_inprocess(cut, client_app=client_app)
    assert load_results(folder)["status"] == "interrupted"
    (folder / "checkpoints" / f".client-0.r{rnd}.pt.left-by-a-kill.tmp").write_bytes(b"half")
    kept = len(load_results(folder)["rounds"])
    return kept, _numbers(_resume(folder)["rounds"])


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
@pytest.mark.parametrize("phase,when", CUTS, ids=[f"{p}-{w}" for p, w in CUTS])
def test_a_cut_anywhere_in_a_round_resumes_bit_for_bit(tmp_path, tmp_path_factory, algorithm, phase, when):
    reference = _reference(algorithm, tmp_path_factory)
    kept, resumed = _cut_and_resume(tmp_path / "cut", algorithm, phase, when)
    assert kept == (CUT_ROUND if when in ("recorded", "switching") else CUT_ROUND - 1)
    assert resumed == reference


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.sampled_from(CUTS), rnd=st.integers(1, 4), pid=st.integers(0, 2))
@example(cut=("server", "recorded"), rnd=4, pid=0)  # every round recorded: the resume only finishes
@example(cut=("train.local", "before"), rnd=1, pid=2)  # nothing recorded: it starts over
@example(cut=("train.distill", "after"), rnd=2, pid=0)
def test_a_cut_in_any_round_of_any_client_resumes_bit_for_bit(tmp_path_factory, cut, rnd, pid):
    """The table above cuts client 1 in round 3; here the first, the last, any client."""
    phase, when = cut
    kept, resumed = _cut_and_resume(tmp_path_factory.mktemp("cut") / "run", "knfu", phase, when, rnd, pid)
    assert kept == (rnd if when in ("recorded", "switching") else rnd - 1)
    assert resumed == _reference("knfu", tmp_path_factory)


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
    assert _numbers(resumed["rounds"]) == _numbers(reference)


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
    resumed = _resume(folder, "--set", "engine=ray")
    assert resumed["run_config"]["engine"] == "ray"
    assert _numbers(resumed["rounds"]) == reference
