"""Cutting a tiny run short anywhere (in a client: before, mid-way through or after its handler;
on the server: in fusion, around recording a round, switching checkpoints) and resuming it with
the CLI (tests/test_resume.py, tests/test_resume_state.py)."""

from __future__ import annotations

import threading

import pytest
from click.testing import CliRunner
from flwr.app import Message

from clients.client_app import make_client_app
from clients.records import partition_id
from experiments.cli import main
from experiments.engines import run_inprocess
from fedkd import checkpoints, client_steps, training
from fedkd import results as results_module
from fedkd.results_files import json_line, load_results
from server.strategy import KnowledgeFusionStrategy
from tests.conftest import tiny_config


def numbers(rounds):
    return [
        (r["round"], r["participants"], r["alma"], r["global_acc"], r["client_acc"], r["weights"])
        for r in rounds
    ]


def resume(folder, *options):
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


def cut_mid_loop(monkeypatch) -> None:
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


def cut_server(monkeypatch, point: str, rnd: int = CUT_ROUND) -> None:
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


def cut_and_resume(folder, overrides, phase, when, rnd=CUT_ROUND, pid=CUT_PID, rounds=4):
    """Run the tiny config with ``overrides`` for ``rounds`` rounds, cut it at (phase, when) of round
    ``rnd`` (client ``pid``), resume it with the CLI; returns how many rounds the cut kept and the
    resumed run's rounds."""
    cut = tiny_config(rounds=rounds, **{**overrides, "out-dir": str(folder)})
    client_app = CutClient(cut, phase, when, rnd, pid) if phase != "server" else make_client_app(cut)
    with pytest.MonkeyPatch.context() as patch:
        cut_mid_loop(patch)
        if phase == "server":
            cut_server(patch, when, rnd)
        with pytest.raises(KeyboardInterrupt):
            run_inprocess(cut, client_app=client_app)
    assert load_results(folder)["status"] == "interrupted"
    (folder / "checkpoints" / f".client-0.r{rnd}.pt.left-by-a-kill.tmp").write_bytes(b"half")
    kept = len(load_results(folder)["rounds"])
    return kept, resume(folder)["rounds"]
