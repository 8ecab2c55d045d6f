"""`fedkd algorithms` and validation read one card per algorithm, so they agree on what each
supports; the listing starts without numpy, torch or Flower."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from experiments.cli import main
from fedkd.config import ExperimentConfig
from fedkd.errors import ConfigError
from fedkd.fusion import FUSIONS
from fedkd.fusion_cards import CARDS
from fedkd.validation import validate_config

ROOT = Path(__file__).resolve().parents[1]


def test_every_registered_algorithm_flies_its_own_card():
    assert set(CARDS) == set(FUSIONS.names())
    for name in FUSIONS.names():
        assert FUSIONS.get(name).card is CARDS[name], name


def _listed() -> dict[str, list[str]]:
    result = CliRunner().invoke(main, ["algorithms"])
    assert result.exit_code == 0, result.output
    header, *rows = result.output.split("\n\n")[0].splitlines()
    at = header.index("compressible")
    return {row.split()[0]: row[at:].split()[0] for row in rows}


@pytest.mark.parametrize("name", sorted(CARDS))
@pytest.mark.parametrize("compression", ["quant", "topk"])
def test_the_listing_says_compressible_exactly_where_validation_accepts_compression(name, compression):
    cfg = ExperimentConfig().with_overrides({"algorithm": name, "compression": compression, "models": "mlp"})
    try:
        validate_config(cfg)
        accepted = True
    except ConfigError as refusal:
        accepted = False
        assert f"algorithm={name}" in str(refusal) and "allowed: compression=none" in str(refusal)
    assert (_listed()[name] == "yes") == accepted


def test_the_listing_imports_neither_torch_nor_flower(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "experiments.cli", "algorithms"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and "knfu" in proc.stdout, proc.stderr[-2000:]
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    assert "fedkd.fusion_cards" in imported
    heavy = {name for name in imported if name.split(".")[0] in ("torch", "flwr", "ray", "numpy", "scipy")}
    assert not heavy, sorted(heavy)[:5]
