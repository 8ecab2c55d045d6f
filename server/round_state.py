"""What one round collects while it runs: accepted uploads, drops, sample counts, bytes, and
what the distil phase measured. Plain records, filled by the round loop (server/strategy.py)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from flwr.app import Message

from fedkd.metric_specs import recorded
from fedkd.metrics import alma, mean_finite, prefixed


def payload_bytes(messages: Iterable[Message]) -> int:
    """Serialized bytes of the arrays (soft predictions / targets) in these messages."""
    total = 0
    for msg in messages:
        if msg.has_content():
            for record in msg.content.array_records.values():
                total += sum(len(arr.data) for arr in record.values())
    return total


@dataclass
class RoundOutcome:
    """Bookkeeping for one round while it runs."""

    node_of: dict[int, int] = field(default_factory=dict)  # partition id -> node id
    accepted: dict[int, Any] = field(default_factory=dict)  # pid -> validated upload
    replies: dict[int, Message] = field(default_factory=dict)  # pid -> its train.local reply
    rolled_back: list[int] = field(default_factory=list)
    asked: list[int] = field(default_factory=list)  # partition ids asked to train (when known)
    failed: list[dict[str, Any]] = field(default_factory=list)
    compute_s: float = 0.0
    server_compute_s: float = 0.0  # the server's own work: checking, fusing, distilling (FedDF)
    private_samples: dict[int, float] = field(default_factory=dict)  # pid -> private samples trained on
    transfer_samples: dict[int, float] = field(default_factory=dict)  # pid -> transfer samples distilled on
    private_steps: dict[int, float] = field(default_factory=dict)  # pid -> optimiser steps on private data
    transfer_steps: dict[int, float] = field(default_factory=dict)  # pid -> optimiser steps distilling
    pretrain_steps: dict[int, float] = field(default_factory=dict)  # pid -> steps on labelled public data
    server_steps: int = 0  # the server's own optimiser steps (FedDF), all architectures
    bytes_up: int = 0
    bytes_down: int = 0
    recorded: dict[str, dict[int, float]] = field(default_factory=dict)  # record name -> pid -> value

    def record(self, pid: int, metrics: dict[str, float]) -> None:
        """Keep an accepted reply's recorded metrics (fedkd/metric_specs.py), whichever phase sent them."""
        for spec in recorded():
            if spec.key in metrics:
                self.recorded.setdefault(spec.record, {})[pid] = metrics[spec.key]

    def completed_records(self, completed: list[int]) -> dict[str, dict[int, float]]:
        """The recorded metrics of the clients that completed the round (those ALMA counts)."""
        done = set(completed)
        return {
            name: {p: v for p, v in values.items() if p in done} for name, values in self.recorded.items()
        }

    def tally(self, pid: int, metrics: dict[str, float]) -> None:
        """Add a reply's compute time and sample counts."""
        self.compute_s += metrics.get("compute-seconds", 0.0)
        for key, counts in (
            ("private-samples", self.private_samples),
            ("transfer-samples", self.transfer_samples),
            ("private-steps", self.private_steps),
            ("transfer-steps", self.transfer_steps),
            ("pretrain-steps", self.pretrain_steps),
        ):
            if key in metrics:
                counts[pid] = counts.get(pid, 0.0) + metrics[key]


@dataclass
class Evaluation:
    """What the distil phase of one round measured."""

    evaluated: bool
    completed: list[int] = field(default_factory=list)  # pids whose distil reply came back
    local_acc: dict[int, float] = field(default_factory=dict)
    global_acc: dict[int, float] = field(default_factory=dict)
    test_sizes: dict[int, int] = field(default_factory=dict)  # local test split sizes
    matched_acc: dict[int, float] = field(default_factory=dict)  # on the label-mix-matched test sample
    matched_sizes: dict[int, int] = field(default_factory=dict)
    val_acc: dict[int, float] = field(default_factory=dict)  # on the validation split

    def add(self, pid: int, metrics: dict[str, float]) -> None:
        """A checked distil reply's scores (matched and val only when that split exists)."""
        self.local_acc[pid] = metrics["local-acc"]
        self.global_acc[pid] = metrics["global-acc"]
        self.test_sizes[pid] = int(metrics["local-test-size"])
        if "matched-acc" in metrics and metrics.get("matched-size", 0) >= 1:
            self.matched_acc[pid] = metrics["matched-acc"]
            self.matched_sizes[pid] = int(metrics["matched-size"])
        if "val-acc" in metrics and metrics.get("val-size", 0) >= 1:
            self.val_acc[pid] = metrics["val-acc"]

    def sort(self) -> None:
        """Replies arrive in any order: sorted, sums (ALMA) are bit-identical across engines."""
        for name in ("local_acc", "global_acc", "test_sizes", "matched_acc", "matched_sizes", "val_acc"):
            setattr(self, name, dict(sorted(getattr(self, name).items())))

    def scores(self) -> dict[str, Any]:
        """The round record's scores: ALMA on the own splits (``alma*``) and on the matched test
        samples (``alma_matched*``, the headline), validation ALMA, global accuracy (its mean, and
        per client for analyses that would otherwise need a rerun), per client."""
        return {
            **alma(self.local_acc, self.test_sizes),
            **prefixed("alma_matched", alma(self.matched_acc, self.matched_sizes)),
            "val_alma": mean_finite(self.val_acc.values()),
            "global_acc": mean_finite(self.global_acc.values()),
            "client_acc": self.local_acc,
            "client_global_acc": self.global_acc,  # each client's model on the global test set
            "client_test_size": self.test_sizes,
            "client_matched_acc": self.matched_acc,
            "client_val_acc": self.val_acc,
        }
