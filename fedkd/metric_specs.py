"""Every number a client reports in its replies, one registered spec each: the range the server
accepts, what the number reveals (none is noised: docs/privacy.md), and, for a *recorded*
metric, the name it is kept under. Everything else derives from the specs: reply checks and
required keys (fedkd/protocol.py, server/strategy.py), the privacy record's unprotected list,
and for a recorded metric its per-client values and round mean in rounds.jsonl, its columns in
rounds.csv and clients.csv, its TensorBoard scalar, ``final``, runs.csv and the report.

A spec with ``compute`` is measured by every client in an evaluated round (after distillation,
beside its accuracies), which is how a plugin adds a measurement (entry point group
``fedkd.metrics``, docs/extending.md). The built-ins' values are computed in fedkd/client_steps.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from fedkd.errors import ConfigError, PluginError
from fedkd.metrics import mean_finite
from fedkd.registry import Registry

# A count is at most 2^53 (integers are exact in float64 up to there), so a sum over any number of
# clients stays finite and exact enough.
MAX_COUNT = float(2**53)
ACCURACY = (0.0, 1.0)
COUNT = (0.0, MAX_COUNT)
# A loss is any finite number: a KL divergence of a student that matches its target rounds to
# about -1e-7. A client whose loss is not finite (no step, a diverged model) reports none.
LOSS = (-math.inf, math.inf)

EVALUATE = "evaluate"  # ``required``: in every distil reply of an evaluated round


@dataclass(frozen=True)
class MetricSpec:
    key: str  # its name on the wire, e.g. "train-loss"
    range: tuple[float, float]  # what the server accepts, inclusive
    reveals: str  # what it tells the server about the client (the threat model's row)
    required: str = ""  # EVALUATE: a reply of an evaluated round without it is refused
    # recorded: the round record holds "client_<record>" ({partition id: value}) and "<record>"
    # (their mean); rounds.csv, clients.csv, TensorBoard (clients/<record>), final, runs.csv and
    # the report show it. "": the round loop's own bookkeeping reads it (accuracies, counts).
    record: str = ""
    label: str = ""  # the report's column header (default: record, spaced)
    # measured by the client in an evaluated round: (model, fedkd.data.federation.ClientData) -> float
    compute: Callable[[Any, Any], float] | None = None

    @property
    def header(self) -> str:
        return self.label or self.record.replace("_", " ")


METRICS: Registry[MetricSpec] = Registry("metric", plugins=MetricSpec)


def metric(spec: MetricSpec) -> MetricSpec:
    """Register ``spec`` under its key (a plugin module may call this, or name the spec itself)."""
    return METRICS.register(spec.key)(spec)


_GUARD = "whether the guard (on a private validation slice) undid the distillation"
_PRETRAIN = "optimiser steps pretraining on the labelled transfer set (a client's first round)"
for _spec in (
    MetricSpec("local-acc", ACCURACY, "accuracy on the client's private held-out split", EVALUATE),
    MetricSpec("local-test-size", COUNT, "size of that held-out split", EVALUATE),
    MetricSpec(
        "global-acc",
        ACCURACY,
        "accuracy of the privately trained model on the shared global test set",
        EVALUATE,
    ),
    MetricSpec(
        "matched-acc", ACCURACY, "accuracy on a test-set sample drawn with the client's training label mix"
    ),
    MetricSpec("matched-size", COUNT, "size of that sample (follows the private label mix)"),
    MetricSpec("val-acc", ACCURACY, "accuracy on the client's private validation split"),
    MetricSpec("val-size", COUNT, "size of that validation split"),
    MetricSpec("num-examples", COUNT, "size of the private training set"),
    MetricSpec("private-samples", COUNT, "private samples processed this round"),
    MetricSpec("transfer-samples", COUNT, "transfer rows distilled on this round"),
    MetricSpec("private-steps", COUNT, "optimiser steps on private data this round"),
    MetricSpec("transfer-steps", COUNT, "optimiser steps on the transfer set this round"),
    MetricSpec("pretrain-steps", COUNT, _PRETRAIN),
    MetricSpec("compute-seconds", COUNT, "time spent on the client's own compute"),
    MetricSpec("rolled-back", ACCURACY, _GUARD),
    MetricSpec("train-loss", LOSS, "mean training loss on the private training data", record="train_loss"),
    MetricSpec("distill-loss", LOSS, "distillation loss on the public transfer set", record="distill_loss"),
):
    metric(_spec)


def metric_specs() -> list[MetricSpec]:
    """Every registered spec, built-ins first (registration order), then installed plugins."""
    names = METRICS.ordered()
    specs = [METRICS.get(name) for name in names]
    for name, spec in zip(names, specs, strict=True):
        if spec.key != name:
            raise PluginError(f"metric {name!r} has the key {spec.key!r}; allowed: its registered name")
    return specs


def recorded() -> list[MetricSpec]:
    return [spec for spec in metric_specs() if spec.record]


def computed() -> list[MetricSpec]:
    return [spec for spec in metric_specs() if spec.compute is not None]


def required_keys(phase: str) -> tuple[str, ...]:
    return tuple(spec.key for spec in metric_specs() if spec.required == phase)


def recorded_names() -> tuple[str, ...]:
    return tuple(spec.record for spec in recorded())


def recorded_fields() -> tuple[str, ...]:
    """The round record's fields of the recorded metrics: "<name>" and "client_<name>" each."""
    return tuple(field for name in recorded_names() for field in (name, f"client_{name}"))


def distinct(columns: Iterable[str], where: str) -> tuple[str, ...]:
    """``columns`` in order; a name twice (a recorded metric named like one of fedkd's own
    fields) is one line naming it."""
    names = tuple(columns)
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ConfigError(
                f"metric record name {name!r} is a field of {where} already; allowed: a new name"
            )
        seen.add(name)
    return names


def with_recorded_metrics(values: dict[str, dict[int, float]], record: dict[str, Any]) -> dict[str, Any]:
    """The round ``record`` with the recorded metrics' fields, from {record name: {partition id:
    value}}: "client_<name>" in partition-id order (sums bit-identical across engines) and
    "<name>", their mean (nan when no client reported it). A name the record has already is
    refused: a plugin's metric never overwrites what fedkd records."""
    fields: dict[str, Any] = {}
    for name in recorded_names():
        per_client = dict(sorted(values.get(name, {}).items()))
        fields[name] = mean_finite(per_client.values())
        fields[f"client_{name}"] = per_client
    distinct((*record, *fields), "the round record")
    return {**record, **fields}
