"""rounds.jsonl: one line per finished round, appended; a killed run keeps exactly its finished
rounds; a damaged line is skipped with a warning; results.json files with rounds inline still read."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from experiments.cli import main
from experiments.engines import run_inprocess
from fedkd import results_files
from fedkd.results import RunResults
from fedkd.results_files import RESULTS_FILE, ROUNDS_FILE, load_results, mark_interrupted, read_rounds
from tests.conftest import tiny_config
from tests.test_resume import InterruptAt

ROOT = Path(__file__).resolve().parents[1]
TINY = {"num-clients": 3, "local-epochs": 1, "distill-epochs": 1, "revisit-epochs": 1, "transfer-size": 100}


def _numbers(rounds):
    return [(r["round"], r["alma"], r["global_acc"], r["client_acc"], r["weights"]) for r in rounds]


def _complete_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def test_a_killed_runs_rounds_jsonl_holds_exactly_its_finished_rounds(tmp_path):
    out = tmp_path / "killed"
    sets = [arg for key, value in TINY.items() for arg in ("--set", f"{key}={value}")]
    cmd = [sys.executable, "-m", "experiments.cli", "run", "--engine", "inprocess", "--rounds", "200"]
    proc = subprocess.Popen(
        [*cmd, *sets, "--out", str(out)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 120
        while _complete_lines(out / ROUNDS_FILE) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)  # no handler runs: whatever is on disk is what a crash leaves
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    lines = (out / ROUNDS_FILE).read_text().splitlines()
    finished = [json.loads(line) for line in lines]  # every line whole: no torn record
    assert [r["round"] for r in finished] == list(range(1, len(finished) + 1)) and len(finished) >= 2
    saved = load_results(out)
    assert saved["status"] == "running" and saved["rounds"] == finished
    assert saved["rounds_done"] in (len(finished) - 1, len(finished))  # results.json follows its line
    reference = run_inprocess(tiny_config(rounds=len(finished), **TINY)).rounds
    assert _numbers(finished) == _numbers(json.loads(json.dumps(reference)))  # the rounds it finished


def test_a_damaged_last_line_is_skipped_with_a_warning_and_a_resume_drops_it(tmp_path):
    cfg = tiny_config(**{"out-dir": str(tmp_path)})
    results = RunResults(cfg, tmp_path / "results.json")
    for n in (1, 2):
        results.append({"round": n, "evaluated": True, "alma": 0.5 + n / 10})
    with open(tmp_path / ROUNDS_FILE, "a") as handle:
        handle.write('{"round": 3, "evaluated": tr')  # torn by a kill mid-write
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logging.getLogger("flwr.fedkd").addHandler(handler)
    try:
        loaded = load_results(tmp_path)
    finally:
        logging.getLogger("flwr.fedkd").removeHandler(handler)
    assert [r["round"] for r in loaded["rounds"]] == [1, 2] and loaded["final"]["alma"] == pytest.approx(0.7)
    assert any("rounds.jsonl: skipped damaged line(s) 3" in message for message in seen), seen
    RunResults(cfg, tmp_path / "results.json", loaded["rounds"], loaded["final"])  # as a resume does
    assert [json.loads(line)["round"] for line in (tmp_path / ROUNDS_FILE).read_text().splitlines()] == [1, 2]


def test_a_fresh_run_in_a_used_folder_starts_an_empty_rounds_file(tmp_path):
    (tmp_path / ROUNDS_FILE).write_text('{"round": 1}\n{"round": 2}\n')
    RunResults(tiny_config(), tmp_path / "results.json")
    assert read_rounds(tmp_path / ROUNDS_FILE) == []


def test_an_interrupted_run_in_the_old_layout_resumes_and_moves_to_rounds_jsonl(tmp_path):
    """results.json files from before rounds.jsonl (rounds inline) stay readable and resumable."""
    whole = tiny_config(rounds=3, **{"out-dir": str(tmp_path / "whole")})
    reference = json.loads(json.dumps(run_inprocess(whole).rounds))
    cut = whole.with_overrides({"out-dir": str(tmp_path / "cut")})
    with pytest.raises(KeyboardInterrupt):
        run_inprocess(cut, client_app=InterruptAt(cut, server_round=3))
    old = load_results(tmp_path / "cut")  # rewrite it as the old layout: rounds inline, no rounds.jsonl
    for key in ("rounds_file", "rounds_done"):
        old.pop(key)
    (tmp_path / "cut" / "results.json").write_text(json.dumps(old))
    (tmp_path / "cut" / ROUNDS_FILE).unlink()
    assert len(load_results(tmp_path / "cut")["rounds"]) == 2

    result = CliRunner().invoke(main, ["run", "--resume", str(tmp_path / "cut")])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "cut" / "results.json").read_text())
    assert "rounds" not in saved and saved["rounds_done"] == 3 and saved["status"] == "completed"
    assert _numbers(read_rounds(tmp_path / "cut" / ROUNDS_FILE)) == _numbers(reference)


def test_a_status_marked_from_outside_the_run_is_final_for_what_the_run_writes_after(tmp_path):
    """The watchdog, or the Ray engine, marks a run interrupted while its ServerApp thread may still
    finish a round and then fail (Ray is gone): the round counts, the status stays interrupted."""
    path = tmp_path / RESULTS_FILE
    results = RunResults(tiny_config(), path)
    results.flush()
    mark_interrupted(path, "interrupted by SIGTERM")
    results.append({"round": 1, "evaluated": False})
    results.finish("failed", "the Ray cluster is gone")
    saved = load_results(tmp_path)
    assert (saved["status"], saved["status_reason"]) == ("interrupted", "interrupted by SIGTERM")
    assert saved["rounds_done"] == len(saved["rounds"]) == 1


def test_marking_a_run_never_writes_back_what_it_read_before_the_runs_own_write(tmp_path, monkeypatch):
    """The mark reads results.json, then writes it: a round the run recorded in between was lost
    (results.json behind rounds.jsonl), unless the two writers take turns."""
    path = tmp_path / RESULTS_FILE
    results = RunResults(tiny_config(), path)
    results.flush()
    recording = threading.Thread(target=results.append, args=({"round": 1, "evaluated": False},))
    real_write = results_files.atomic_write_json

    def write(target, payload):
        if payload.get("status") == "interrupted" and not recording.ident:  # the mark's own write
            recording.start()
            recording.join(1.0)  # the run records its round now, if it may
        real_write(target, payload)

    monkeypatch.setattr(results_files, "atomic_write_json", write)
    mark_interrupted(path, "interrupted by SIGTERM")
    recording.join()
    saved = load_results(tmp_path)
    assert saved["status"] == "interrupted" and saved["rounds_done"] == len(saved["rounds"]) == 1
