"""Shared fixtures: a tiny but real experiment config on embedded digits."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from fedkd.config import ExperimentConfig
from fedkd.validation import validate_config


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-download", action="store_true", help="run tests that need internet")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-download"):
        return
    skip = pytest.mark.skip(reason="needs internet: pass --run-download")
    for item in items:
        if "download" in item.keywords:
            item.add_marker(skip)


def tiny_config(**overrides) -> ExperimentConfig:
    """3 heterogeneous clients, 2 rounds, 1 epoch each: seconds, yet every code path runs."""
    base = {
        "num-clients": 3,
        "rounds": 2,
        "local-epochs": 1,
        "distill-epochs": 1,
        "revisit-epochs": 1,
        "transfer-size": 100,
        "engine": "inprocess",
        "min-replies": 2,
    }
    base.update(overrides)
    return validate_config(ExperimentConfig().with_overrides(base))


# settings that make an algorithm run more of its code than its defaults do: a fresh subset of the
# transfer rows each round (FedMD), server-side distillation steps (FedDF)
EXERCISED = {"fedmd-subset": 40, "feddf-server-steps": 5}


def exercising(algorithm: str) -> dict[str, object]:
    """tiny_config overrides for ``algorithm``: one architecture where it needs one, and the
    EXERCISED settings its card says it reads."""
    from fedkd.fusion import FUSIONS

    fusion = FUSIONS.get(algorithm)
    reads = {key: value for key, value in EXERCISED.items() if key in fusion.card.keys}
    one_width = (
        {"projection-width": 16} if fusion.uploads == "class-prototypes" else {}
    )  # prototypes need one
    return {
        "algorithm": algorithm,
        **({"models": "mlp"} if fusion.needs_one_architecture else {}),
        **one_width,
        **reads,
    }


@pytest.fixture
def tiny() -> ExperimentConfig:
    return tiny_config()


@pytest.fixture(scope="session")
def shared_data():
    """The offline dataset copies (../shared/data, or $FEDKD_DATA_DIR as CI sets it)."""
    import os
    from pathlib import Path

    folder = Path(os.environ.get("FEDKD_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
    assert (folder / "mnist").is_dir(), f"offline datasets not found at {folder}: set FEDKD_DATA_DIR"
    return folder


@pytest.fixture
def fedkd_messages() -> Iterator[list[str]]:
    """Every message fedkd logs (logger "flwr.fedkd") while the test runs."""
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logging.getLogger("flwr.fedkd").addHandler(handler)
    yield seen
    logging.getLogger("flwr.fedkd").removeHandler(handler)
