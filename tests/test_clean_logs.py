"""Output read anywhere: colour only on a terminal and never with NO_COLOR; piped output of a run
and of a sweep holds no escape codes and no carriage-return bars."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.console import colour_wanted, plain_unless_terminal, progress_bars_wanted

ROOT = Path(__file__).resolve().parents[1]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_only_on_a_terminal_without_no_color(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert colour_wanted(Terminal()) and not colour_wanted(io.StringIO())
    assert progress_bars_wanted(Terminal()) and not progress_bars_wanted(io.StringIO())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not colour_wanted(Terminal())


def test_flowers_console_handler_follows_the_rule(monkeypatch):
    from flwr.supercore import logger as flower_logger

    plain_unless_terminal()
    monkeypatch.delenv("NO_COLOR", raising=False)
    for stderr, colour in ((io.StringIO(), False), (Terminal(), True)):
        monkeypatch.setattr(sys, "stderr", stderr)
        flower_logger.console_handler.colored = not colour
        logging.getLogger("flwr.fedkd").warning("a line")
        assert flower_logger.console_handler.colored is colour
    monkeypatch.setenv("NO_COLOR", "1")
    logging.getLogger("flwr.fedkd").warning("a line")
    assert flower_logger.console_handler.colored is False


def _piped(args: list[str], cwd: Path) -> str:
    """stdout and stderr of ``python ARGS`` through pipes, NO_COLOR unset."""
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, timeout=300)
    output = (proc.stdout + proc.stderr).decode()
    assert proc.returncode == 0, output
    return output


def test_piped_log_lines_have_no_colour(tmp_path):
    script = (
        "import logging, flwr.supercore.logger\n"
        "from experiments.cli import configure_logging\n"
        "configure_logging(verbose=False)\n"
        "logging.getLogger('flwr.fedkd').warning('a fedkd note')\n"
        "logging.getLogger('flwr').warning('a Flower warning')\n"
    )
    output = _piped(["-c", script], tmp_path)
    assert "a fedkd note" in output and "a Flower warning" in output and "WARNING" in output
    assert "\x1b" not in output


def test_piped_sweep_output_has_a_plain_line_per_run_and_no_bar(tmp_path):
    sweep = tmp_path / "tiny.toml"
    sweep.write_text(
        'name = "tiny"\n[base]\ndataset = "digits"\nengine = "inprocess"\nnum-clients = 3\nrounds = 1\n'
        "local-epochs = 1\ndistill-epochs = 1\ntransfer-size = 60\n[grid]\nseed = [0, 1]\n"
    )
    args = ["-m", "experiments.cli", "sweep", str(sweep), "--workers", "1", "--out", str(tmp_path / "s")]
    output = _piped(args, tmp_path)
    assert "[1/2] seed=" in output and "[2/2] seed=" in output  # a plain line per finished run
    assert "\x1b" not in output and "\r" not in output


@pytest.mark.slow
def test_piped_ray_run_is_plain_and_drops_the_actors_shutdown_notice(tmp_path):
    args = [
        "-m",
        "experiments.cli",
        "run",
        "--num-clients",
        "3",
        "--rounds",
        "1",
        "--set",
        "transfer-size=60",
    ]
    output = _piped([*args, "--set", "local-epochs=1", "--out", str(tmp_path / "run")], tmp_path)
    assert "round   1/1 | ALMA" in output and "engine ray" in output
    assert "\x1b" not in output and "\r" not in output and "Manually terminating" not in output
