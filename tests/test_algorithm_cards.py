"""`fedkd algorithms` and validation read one card per algorithm, so they agree on what each
supports (that the listing starts without numpy, torch or Flower: tests/test_cli.py)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from experiments.cli import main
from fedkd.config import ExperimentConfig
from fedkd.errors import ConfigError
from fedkd.fusion import FUSIONS
from fedkd.fusion_cards import CARDS
from fedkd.validation import validate_config


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
