"""What `fedkd tune` searches, per algorithm, in one place.

``SPACES`` maps an algorithm to the config keys it tunes and their ranges; the docs
(docs/tuning.md, ``render_markdown``) and the sampling (``suggest``) both read it, so what is
written is what is searched. Every method tunes the shared keys (learning rate, and the split of
its private epochs between before and after distilling, with their sum fixed so the compute
budget stays that of the base config); prediction-sharing methods whose temperature is free also
tune it; each method adds its own keys. Compute (FedDF's server steps, the epochs' sum, rounds)
is never tuned: a method must not win by buying more of it.

A parameter's ``suggest(trial, flat)`` asks an Optuna trial (anything with suggest_float /
suggest_int / suggest_categorical) for its values and returns config keys -> values; ``flat`` is
the base config's run_config, for ranges that depend on it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger("flwr.fedkd")
DEFAULT_TRIALS = 20  # trials per algorithm and cell (fedkd tune --trials)


class Suggests(Protocol):
    """The part of optuna.Trial a parameter uses."""

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float: ...

    def suggest_int(self, name: str, low: int, high: int) -> int: ...

    def suggest_categorical(self, name: str, choices: Any) -> Any: ...


@dataclass(frozen=True)
class FloatRange:
    key: str
    low: float
    high: float
    log: bool = False  # sample uniformly in log space (rates, weights spanning decades)

    def suggest(self, trial: Suggests, flat: Mapping[str, Any]) -> dict[str, Any]:
        return {self.key: trial.suggest_float(self.key, self.low, self.high, log=self.log)}

    def describe(self) -> str:
        return f"{'log-uniform' if self.log else 'uniform'} {self.low:g} .. {self.high:g}"

    def base(self, flat: Mapping[str, Any]) -> dict[str, Any]:
        value = flat.get(self.key)
        in_range = isinstance(value, (int, float)) and self.low <= value <= self.high
        return {self.key: float(value)} if in_range else {}


@dataclass(frozen=True)
class IntRange:
    key: str
    low: int
    high: int | str  # a number, or a config key whose value (minus ``below``) bounds the range
    below: int = 0

    def top(self, flat: Mapping[str, Any]) -> int:
        """The range's upper end for this base config (at least ``low``)."""
        high = (flat[self.high] if isinstance(self.high, str) else self.high) - self.below
        return max(self.low, high)

    def suggest(self, trial: Suggests, flat: Mapping[str, Any]) -> dict[str, Any]:
        return {self.key: trial.suggest_int(self.key, self.low, self.top(flat))}

    def describe(self) -> str:
        return f"integers {self.low} .. {self.high}" + (f" - {self.below}" if self.below else "")

    def base(self, flat: Mapping[str, Any]) -> dict[str, Any]:
        value = flat.get(self.key)
        in_range = isinstance(value, int) and self.low <= value <= self.top(flat)
        return {self.key: value} if in_range else {}


@dataclass(frozen=True)
class Choice:
    key: str
    options: tuple[Any, ...]
    # parameters searched only when ``key`` takes that option (e.g. top-m's m)
    then: Mapping[Any, tuple[Param, ...]] = field(default_factory=dict)

    def suggest(self, trial: Suggests, flat: Mapping[str, Any]) -> dict[str, Any]:
        value = trial.suggest_categorical(self.key, list(self.options))
        chosen = {self.key: value}
        for param in self.then.get(value, ()):
            chosen |= param.suggest(trial, flat)
        return chosen

    def describe(self) -> str:
        return "one of " + ", ".join(_show(option) for option in self.options)

    def base(self, flat: Mapping[str, Any]) -> dict[str, Any]:
        value = flat.get(self.key)
        if value not in self.options:
            return {}
        return {self.key: value} | base_point(tuple(self.then.get(value, ())), flat)


@dataclass(frozen=True)
class EpochSplit:
    """Private epochs before distilling vs after it (revisit), their sum fixed: the split is a
    choice, the number of passes is the budget."""

    key: str = "local-epochs"
    rest: str = "revisit-epochs"

    def suggest(self, trial: Suggests, flat: Mapping[str, Any]) -> dict[str, Any]:
        total = int(flat[self.key]) + int(flat[self.rest])
        first = trial.suggest_int(self.key, 1, total)
        return {self.key: first, self.rest: total - first}

    def describe(self) -> str:
        return (
            f"integers 1 .. {self.key} + {self.rest} of the base config; {self.rest} takes the rest "
            "(the sum, the private passes per round, is not tuned)"
        )

    def base(self, flat: Mapping[str, Any]) -> dict[str, Any]:
        first = int(flat[self.key])
        return {self.key: first} if first >= 1 else {}


Param = FloatRange | IntRange | Choice | EpochSplit

SHARED: tuple[Param, ...] = (FloatRange("learning-rate", 3e-4, 1e-2, log=True), EpochSplit())
TEMPERATURE = FloatRange("temperature", 1.0, 10.0)  # soft predictions and the KD loss
KNFU: tuple[Param, ...] = (
    *SHARED,
    TEMPERATURE,
    FloatRange("beta", 0.1, 100.0, log=True),
    Choice("include-self", (True, False)),
    Choice(
        "neighbour-rule",
        ("mean-threshold", "fixed-threshold", "top-m"),
        then={
            "fixed-threshold": (FloatRange("neighbour-threshold", 0.01, 1.0, log=True),),
            "top-m": (IntRange("neighbour-top-m", 1, "num-clients", below=1),),
        },
    ),
)

# Algorithm -> what it tunes: SHARED first, then its own. Temperature only where the algorithm
# does not fix it (dsfl and selective-fd work on T = 1 probabilities; fedavg and local upload no
# predictions).
SPACES: dict[str, tuple[Param, ...]] = {
    "local": SHARED,
    "fedavg": SHARED,
    "self-distill": (*SHARED, TEMPERATURE),
    "fedmd": (*SHARED, TEMPERATURE),
    "fedmd-nopretrain": (*SHARED, TEMPERATURE),
    "knfu": KNFU,
    "knfu-guard": KNFU,
    "dsfl": (*SHARED, FloatRange("dsfl-temperature", 0.01, 1.0, log=True)),
    "kt-pfl": (  # T = 10 and the reference's adaptive step rule: no temperature or step size to tune
        *SHARED,
        FloatRange("ktpfl-rho", 0.0, 2.0),
        IntRange("ktpfl-steps", 1, 10),
    ),
    "feddf": (*SHARED, TEMPERATURE),  # feddf-server-steps is compute: never tuned
    "fd": (*SHARED, TEMPERATURE, FloatRange("fd-weight", 0.01, 10.0, log=True)),
    "fedproto": (*SHARED, FloatRange("fedproto-weight", 0.01, 10.0, log=True)),  # projection-width: the model
    "selective-fd": (
        *SHARED,
        FloatRange("selective-quantile", 0.5, 1.0),
        FloatRange("selective-entropy", 0.3, 1.0),
    ),
}


def space_of(algorithm: str) -> tuple[Param, ...]:
    """The algorithm's search space; one without an entry tunes the shared keys (with a warning)."""
    if algorithm not in SPACES:
        log.warning(
            "fedkd tune: no search space for algorithm %r; tuning only %s",
            algorithm,
            ", ".join(keys_of(SHARED)),
        )
        return SHARED
    return SPACES[algorithm]


def suggest(space: tuple[Param, ...], trial: Suggests, flat: Mapping[str, Any]) -> dict[str, Any]:
    """One trial's settings: config key -> value, every parameter of ``space`` asked once."""
    chosen: dict[str, Any] = {}
    for param in space:
        chosen |= param.suggest(trial, flat)
    return chosen


def base_point(space: tuple[Param, ...], flat: Mapping[str, Any]) -> dict[str, Any]:
    """The base config's own values as Optuna parameters (trial 0 of every study runs them, so a
    tuned setting must beat the defaults on validation to replace them). A value outside its
    range is left out (the sampler draws it)."""
    point: dict[str, Any] = {}
    for param in space:
        point |= param.base(flat)
    return point


def keys_of(space: tuple[Param, ...]) -> list[str]:
    """Every config key ``space`` may set (conditional ones included), in order."""
    keys: list[str] = []
    for param in space:
        keys.append(param.key)
        if isinstance(param, EpochSplit):
            keys.append(param.rest)
        if isinstance(param, Choice):
            keys += [key for inner in param.then.values() for key in keys_of(inner)]
    return keys


def _show(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _describe(param: Param) -> list[str]:
    """``key``: range, then the parameters searched only under one of its options."""
    lines = [f"`{param.key}` {param.describe()}"]
    if isinstance(param, Choice):
        for option, inner in param.then.items():
            lines += [f"`{p.key}` (when {param.key} = {_show(option)}) {p.describe()}" for p in inner]
    return lines


def render_markdown() -> str:
    """The search space as Markdown (docs/tuning.md holds it; a test keeps the two in sync)."""
    lines = [
        f"Trials per algorithm and cell: {DEFAULT_TRIALS} by default (`--trials`), the same for every "
        "algorithm. Every algorithm tunes the shared keys:",
        "",
        *(f"- {line}" for param in SHARED for line in _describe(param)),
        "",
        "and its own:",
        "",
        "| algorithm | its own keys, searched over |",
        "|---|---|",
    ]
    for algorithm, space in SPACES.items():
        own = [line for param in space[len(SHARED) :] for line in _describe(param)]
        lines.append(f"| {algorithm} | {'; '.join(own) or '-'} |")
    others = ", ".join(f"`{key}`" for key in keys_of(SHARED))
    lines += ["", f"An algorithm not listed tunes only {others} (with a warning)."]
    return "\n".join(lines) + "\n"
