"""--dry-run checks the out folder as the real run does, and creates nothing."""

from __future__ import annotations

from click.testing import CliRunner

from experiments.cli import main
from tests.test_cli import TINY
from tests.test_run_lock import held_by_another_process


def _dry(*args: str):
    return CliRunner().invoke(main, ["run", *TINY, "--dry-run", *args])


def test_dry_run_refuses_an_out_folder_the_run_would_refuse(tmp_path):
    (tmp_path / "results.json").write_text("{}")
    refused = _dry("--out", str(tmp_path))
    assert refused.exit_code == 2 and "results.json already exists" in refused.output
    assert len(refused.output.strip().splitlines()) == 1
    assert _dry("--out", str(tmp_path), "--overwrite").exit_code == 0  # what the run accepts too
    assert (tmp_path / "results.json").read_text() == "{}"  # nothing written


def test_dry_run_refuses_a_file_as_out_folder_and_creates_no_new_one(tmp_path):
    (tmp_path / "file").write_text("")
    assert _dry("--out", str(tmp_path / "file")).exit_code == 2
    fresh = tmp_path / "new" / "run"
    assert _dry("--out", str(fresh)).exit_code == 0 and not (tmp_path / "new").exists()
    assert _dry("--out", str(tmp_path / "file" / "run")).exit_code == 2  # under a file: cannot be created


def test_dry_run_refuses_a_folder_a_live_run_owns_and_leaves_no_lock_file(tmp_path):
    """As the run and the resume would (fedkd/folder_lock.py): one line naming the owner's PID."""
    busy, free = tmp_path / "busy", tmp_path / "free"
    busy.mkdir()
    free.mkdir()
    with held_by_another_process(busy) as holder:
        for args in (["--out", str(busy)], ["--resume", str(busy)]):
            refused = CliRunner().invoke(
                main,
                ["run", *TINY, "--dry-run", *args] if args[0] == "--out" else ["run", "--dry-run", *args],
            )
            assert refused.exit_code == 2 and f"PID {holder.pid}" in refused.output, refused.output
            assert len(refused.output.strip().splitlines()) == 1
    assert _dry("--out", str(free)).exit_code == 0 and list(free.iterdir()) == []  # no lock file made
