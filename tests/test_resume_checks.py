"""What `fedkd run --resume` refuses, and how checkpoints become current.

A resume continues exactly the run it finds or refuses in one line (exit 2): options that would
change the rounds already done, a config, code or data other than the checkpoints were made with,
a rounds file that lost a round after its checkpoints replaced the older ones."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments.cli import main
from experiments.engines import run_inprocess
from experiments.run_setup import resumable_run
from fedkd import checkpoints
from fedkd.checkpoints import current_round, latest, prepare_resume, switch, tagged
from fedkd.config import config_keys
from fedkd.errors import ConfigError
from fedkd.results_files import load_results
from fedkd.run_identity import RESUME_FREE_KEYS
from fedkd.validation import validate_config
from tests.conftest import tiny_config
from tests.cuts import numbers as _numbers
from tests.cuts import resume as _resume
from tests.test_resume import InterruptAt

ROUNDS, CUT = 4, 3  # a 4-round run cut as round 3 starts: 2 rounds done


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("interrupted") / "run"
    cfg = tiny_config(rounds=ROUNDS, **{"out-dir": str(folder)})
    with pytest.raises(KeyboardInterrupt):
        run_inprocess(cfg, client_app=InterruptAt(cfg, server_round=CUT))
    return folder


@pytest.fixture
def cut(interrupted, tmp_path):
    """A copy of the interrupted run to resume or damage."""
    return shutil.copytree(interrupted, tmp_path / "run")


def _refused(folder, *options) -> str:
    result = CliRunner().invoke(main, ["run", "--resume", str(folder), *options])
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    return result.output


# -- options given with --resume: every key --------------------------------------------------
STRINGS = [
    *("cnn-s", "mlp", "mnist", "csv", "fedmd", "iid", "topk", "gaussian", "rdp", "js", "cpu", "ray"),
    *("threads", "target-epsilon", "logits", "passes", "top-m", "projection", "row", "/tmp", "a:1"),
    *("fixed", "epochs", "example", "fashion-mnist", "none", "auto"),
]


def another_value(cfg, key):
    """A valid value of ``key`` other than ``cfg``'s (None: none of the candidates is)."""
    current = cfg.to_run_config()[key]
    if isinstance(current, bool):
        candidates = [not current]
    elif isinstance(current, int):
        candidates = [current + 1, current + 2, 1, 2, 5, 16]  # 16: a projection at least the classes wide
    elif isinstance(current, float):
        candidates = [current * 2, current / 2, current + 0.1, 0.5, 1.0, 2.0]
    else:
        candidates = STRINGS
    for value in candidates:
        try:
            changed = validate_config(cfg.with_overrides({key: value}))
        except ConfigError:
            continue
        if changed.to_run_config()[key] != current:
            return value
    return None


def test_every_key_given_with_resume_applies_only_where_the_rounds_done_stay_valid(interrupted):
    saved, _ = resumable_run(str(interrupted))
    for key in config_keys():
        value = ROUNDS + 2 if key == "rounds" else another_value(saved, key)
        assert value is not None, f"no other valid value for {key}: add a candidate"
        if key in RESUME_FREE_KEYS and key != "out-dir":
            cfg, _ = resumable_run(str(interrupted), {key: value})
            assert (
                cfg.to_run_config()[key]
                == validate_config(saved.with_overrides({key: value})).to_run_config()[key]
            )
        else:
            with pytest.raises(ConfigError, match=f"{key}=.*would change the rounds already done"):
                resumable_run(str(interrupted), {key: value})


@pytest.mark.parametrize(
    "options,says",
    [
        (["--algorithm", "fedmd"], "algorithm='fedmd' (the run has 'knfu')"),
        (["--set", "beta=5"], "beta=5.0"),
        (["--set", "rounds=1"], "rounds=1, but 2 are done"),
        (["--out", "elsewhere"], "--out with --resume"),
        (["--overwrite"], "--overwrite with --resume"),
    ],
)
def test_options_that_would_change_the_rounds_done_are_refused(interrupted, options, says):
    assert says in _refused(interrupted, *options)


def test_more_rounds_apply_and_end_as_a_longer_uninterrupted_run(cut, tmp_path):
    longer = tiny_config(rounds=ROUNDS + 1, **{"out-dir": str(tmp_path / "whole")})
    reference = _numbers(json.loads(json.dumps(run_inprocess(longer).rounds)))
    resumed = _resume(cut, "--set", f"rounds={ROUNDS + 1}")
    assert resumed["run_config"]["rounds"] == ROUNDS + 1
    assert _numbers(resumed["rounds"]) == reference


# -- what the checkpoints were made with ------------------------------------------------------
@pytest.mark.parametrize("key,value", [("num-clients", 4), ("models", "mlp"), ("seed", 7)])
def test_a_results_file_edited_to_another_config_is_refused(cut, key, value):
    payload = json.loads((cut / "results.json").read_text())
    payload["run_config"][key] = value
    (cut / "results.json").write_text(json.dumps(payload))
    said = _refused(cut)
    assert f"{key}: " in said and "differs from the one its checkpoints were made with" in said


@pytest.mark.parametrize("what", ["code", "data"])
def test_other_code_or_data_is_refused(cut, monkeypatch, what):
    name = "code_version" if what == "code" else "data_fingerprint"
    monkeypatch.setattr(checkpoints, name, lambda *args: "sha256:something-else")
    assert f"the {'code version' if what == 'code' else 'data fingerprint'} changed" in _refused(cut)


def test_missing_checkpoints_are_refused_not_replaced_by_fresh_models(cut):
    shutil.rmtree(cut / "checkpoints")
    assert "manifest.json is missing" in _refused(cut)


def test_a_round_lost_after_its_checkpoints_became_current_is_refused(cut):
    """Rounds 1-2 recorded and switched; then round 2's line is damaged: round 1's files are gone."""
    lines = (cut / "rounds.jsonl").read_text().splitlines(keepends=True)
    (cut / "rounds.jsonl").write_text(lines[0] + lines[1][:20] + "\n")
    assert "its checkpoints are of round 2, but its rounds file keeps 1" in _refused(cut)


def test_a_stopped_run_is_not_resumed(cut):
    payload = json.loads((cut / "results.json").read_text())
    (cut / "results.json").write_text(json.dumps({**payload, "status": "stopped"}))
    assert "already stopped" in _refused(cut)
    assert load_results(cut)["rounds_done"] == CUT - 1  # nothing rewritten


# -- tagged files: write new, record, switch; a resume drops what came after ------------------
@settings(max_examples=60, deadline=None)
@given(
    files=st.dictionaries(
        st.sampled_from(["client-0", "client-1", "client-12", "server-weights"]),
        st.sets(st.integers(1, 6), min_size=1),
        max_size=4,
    ),
    recorded=st.integers(0, 6),
    temps=st.integers(0, 2),
)
def test_a_resume_keeps_each_files_newest_recorded_round_and_nothing_else(
    tmp_path_factory, files, recorded, temps
):
    folder = tmp_path_factory.mktemp("checkpoints")
    for stem, rounds in files.items():
        for r in rounds:
            tagged(folder, stem, r, ".pt").write_bytes(f"{stem} {r}".encode())
    for i in range(temps):
        (folder / f".client-0.r{recorded + 1}.pt.{i}.tmp").write_bytes(b"half")
    prepare_resume(folder, recorded)
    expected = {
        stem: tagged(folder, stem, max(r for r in rounds if r <= recorded), ".pt").name
        for stem, rounds in files.items()
        if min(rounds) <= recorded
    }
    assert sorted(p.name for p in folder.iterdir() if p.name != checkpoints.CURRENT) == sorted(
        expected.values()
    )
    for stem in files:
        found = latest(folder, stem, ".pt", recorded)
        assert (found.name if found else None) == expected.get(stem)
    assert current_round(folder) == recorded
    switch(folder, recorded + 1)  # the next recorded round makes its files current
    assert current_round(folder) == recorded + 1
