"""What a key's Python type allows, whatever the key: the conversion of TOML, CLI text and JSON
values to the type, and the checks every value of that type gets (finite, within int64, no
control characters). fedkd/validation.py adds each key's own range; both read the type from the
key's field in fedkd/config.py, so a new key is checked by type the moment it exists.
"""

from __future__ import annotations

import math
import unicodedata
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
