"""--dry-run checks the out folder as the real run does, and creates nothing."""

from __future__ import annotations

from click.testing import CliRunner

from experiments.cli import main
from tests.test_cli import TINY


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
