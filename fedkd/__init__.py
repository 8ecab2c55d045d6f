"""fedkd's core library: config, data and partitions, models, knowledge ops, fusion algorithms,
training loops, privacy, metrics and the results files, in numpy and torch.

It never imports flwr (flwr-datasets, a data library, is fine): clients/ and server/ wrap it in
Flower's apps. The package version is the installed distribution's (pyproject.toml), read with
importlib.metadata where it is recorded (fedkd/results.py).

``fedkd.run`` and ``fedkd.make_config`` are the Python front door (experiments/api.py): they
are imported on first use, so ``import fedkd`` loads neither torch nor Flower.
"""

from __future__ import annotations

from typing import Any

__all__ = ["make_config", "run"]


def __getattr__(name: str) -> Any:
    """``fedkd.run`` / ``fedkd.make_config``, from the front door on first use."""
    if name in __all__:
        from experiments import api  # the one upward import: what `fedkd run` runs, on demand

        return getattr(api, name)
    raise AttributeError(f"module 'fedkd' has no attribute {name!r}")
