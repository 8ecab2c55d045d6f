"""An interrupted run resumed from its checkpoints ends with the numbers of an uninterrupted run."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from flwr.app import Message

from clients.client_app import make_client_app
from experiments.cli import main
from experiments.engines import run_inprocess
from fedkd.results_files import load_results
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
    return [(r["round"], r["alma"], r["global_acc"], r["client_acc"], r["weights"]) for r in rounds]


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
