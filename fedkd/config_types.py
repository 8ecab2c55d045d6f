"""What a key allows, declared on its field: the conversion of TOML, CLI text and JSON values to
the field's type, the checks every value of a type gets (finite, within int64, no control
characters) and the key's own range (``allowed(default, ">= 2")`` in fedkd/config.py).
fedkd/validation.py runs them for every field, then the checks that relate keys or need a registry.
"""

from __future__ import annotations

import math
import operator
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from fedkd.errors import ConfigError

INT64 = (-(2**63), 2**63 - 1)  # what numpy, torch and results files hold


_KINDS = {bool: "a boolean; allowed: true, false", int: "an integer", float: "a number", str: "a string"}


def coerce(key: str, value: Any, kind: type, text: bool = True) -> Any:
    """Convert a value to the field's type: text (``text``: from the command line) is parsed; else
    the type is checked before any conversion, so a TOML date, a string, an array, a table or JSON
    null is an error, not a crash."""
    if isinstance(value, str) and kind is not str and text:
        text = value.strip()
        if kind is bool:
            if text.lower() in {"true", "1", "yes"}:
                return True
            if text.lower() in {"false", "0", "no"}:
                return False
            raise ConfigError(f"{key}={value!r} is not {_KINDS[bool]}")
        try:
            return kind(text)
        except ValueError:
            raise ConfigError(f"{key}={value!r} is not a valid {kind.__name__}") from None
    wrong = ConfigError(f"{key}={value!r} is not {_KINDS[kind]}")
    if kind in (bool, str):
        if not isinstance(value, kind):
            raise wrong
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise wrong
    if kind is int:
        if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
            raise wrong
        return int(value)
    try:
        return float(value)
    except OverflowError:  # an integer beyond any float
        raise ConfigError(f"{key}={value} is invalid; allowed: a finite number") from None


def check_type_range(key: str, value: Any) -> None:
    """The checks every value of its type gets: a finite float, an int64 integer, a string without
    control characters (a newline in out-dir would break the run's config.toml)."""
    if isinstance(value, bool):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}={value} is invalid; allowed: a finite number")
    if isinstance(value, int) and not INT64[0] <= value <= INT64[1]:
        raise ConfigError(f"{key}={value} is invalid; allowed: {INT64[0]} .. {INT64[1]}")
    if isinstance(value, str) and any(unicodedata.category(ch) == "Cc" for ch in value):
        raise ConfigError(f"{key}={value!r} is invalid; allowed: text without control characters")


_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
_FLIP = {"<": ">", "<=": ">="}
_ONE_SIDE = re.compile(r"(>=|>|<=|<) (\S+)")
_TWO_SIDES = re.compile(r"(\S+) (<=|<) value (<=|<) (\S+)")


@dataclass(frozen=True)
class Allowed:
    """A key's range, written as it is shown to users: ">= 2", "> 0", "0 < value <= 1"."""

    spec: str
    note: str = ""  # what a special value means, e.g. "0: no cap"

    def __post_init__(self) -> None:
        self.bounds()  # a malformed spec fails when config.py is imported, not when a user errs

    def bounds(self) -> list[tuple[str, float]]:
        """(operator, bound) pairs that a value must satisfy, value on the left."""
        if match := _ONE_SIDE.fullmatch(self.spec):
            return [(match[1], float(match[2]))]
        if match := _TWO_SIDES.fullmatch(self.spec):
            return [(_FLIP[match[2]], float(match[1])), (match[3], float(match[4]))]
        raise ValueError(f"range {self.spec!r}: write '>= 2' or '0 < value <= 1'")

    def admits(self, value: float) -> bool:
        return all(_OPS[op](value, bound) for op, bound in self.bounds())

    def describe(self) -> str:
        return f"{self.spec} ({self.note})" if self.note else self.spec


def allowed(default: Any, spec: str, note: str = "") -> Any:
    """A dataclass field with its range: ``num_clients: int = allowed(10, ">= 2")``."""
    return field(default=default, metadata={"allowed": Allowed(spec, note)})


def check_range(key: str, value: Any, metadata: Any) -> None:
    """The range declared on the key's field, if any."""
    rule = metadata.get("allowed")
    if rule is not None and not rule.admits(value):
        raise ConfigError(f"{key}={value} is invalid; allowed: {rule.describe()}")
