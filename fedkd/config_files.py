"""Config files: a TOML file of flat keys, or an earlier run's results.json.

Apart from fedkd/config.py because reading a results.json needs fedkd/results_files.py, which
needs the config; keeping files here leaves config.py free of imports (no loop).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from fedkd.errors import ConfigError
from fedkd.results_files import load_run_config


def read_toml(path: str | Path, what: str) -> dict[str, Any]:
    """Parse a TOML file; a missing or malformed file is a one-line ConfigError naming it."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except (FileNotFoundError, IsADirectoryError):
        raise ConfigError(f"{what} {str(path)!r} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} {str(path)!r} is not valid TOML: {exc}") from None


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Flat keys from a TOML file (all at the top level, or all under one [config] table) or
    from an earlier run's results.json (its config, minus out-dir: a repeat lands anew)."""
    if Path(path).suffix == ".json":
        return load_run_config(path)
    raw = read_toml(path, "config file")
    table = raw.get("config", raw)
    if not isinstance(table, dict):
        raise ConfigError(f"config file {str(path)!r}: [config] must be a table of keys")
    mixed = [k for k in raw if k != "config"] if "config" in raw else []
    if mixed:
        raise ConfigError(
            f"config file {str(path)!r} mixes top-level keys ({mixed[0]!r}) with a [config] table; "
            "allowed: every key at the top level, or every key under [config]"
        )
    nested = [k for k, v in table.items() if isinstance(v, dict)]
    if nested:
        raise ConfigError(
            f"config file {str(path)!r}: nested table {nested[0]!r}; use flat keys like alpha = 0.5"
        )
    return table
