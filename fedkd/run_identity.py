"""What a run's numbers depend on: its config (less the keys that only say where or how it
executes), the code that computes them and the data. Sweeps skip a run whose identity is in their
table; a resumed run must have the identity its checkpoints were made with. Light on purpose
(hashlib and importlib only): sweep reports import it without torch.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

# Keys that change where or how a run executes (on CPU), never its numbers: not part of its identity.
NON_IDENTITY_KEYS = (
    "out-dir",
    "engine",
    "client-threads",
    "data-dir",
    "min-nodes-wait",
    "workers",
    "worker-pool",
    "offload-idle",
    "ray-address",
)
# Keys added after runs were published, at the value that does what runs did before the key
# existed: left out of an identity while they hold it, so adding an option never renames (and
# reruns) the runs a sweep or a study already holds. A key joins here with the release that adds
# it, and its value here never changes (its default may).
NEUTRAL_VALUES: dict[str, Any] = {"projection-width": 0, "fd-weight": 1.0, "fedproto-weight": 1.0}
# What `fedkd run --resume` may change besides them: more rounds leave the rounds done as they are.
RESUME_FREE_KEYS = (*NON_IDENTITY_KEYS, "rounds")
# First-party packages whose source computes the numbers (experiments/ only drives them).
NUMERIC_PACKAGES = ("fedkd", "server", "clients")
NUMERIC_DEPENDENCIES = ("torch", "numpy", "flwr", "flwr-datasets")


def identity_keys(run_config: dict[str, Any], free: tuple[str, ...] = NON_IDENTITY_KEYS) -> dict[str, Any]:
    """The keys a run's numbers depend on, with their values: all but ``free`` and the late keys at
    their neutral value."""
    return {
        key: value
        for key, value in sorted(run_config.items())
        if key not in free and not (key in NEUTRAL_VALUES and value == NEUTRAL_VALUES[key])
    }


def resume_identity(run_config: dict[str, Any]) -> dict[str, Any]:
    """The keys a resumed run may not change, with their values."""
    return identity_keys(run_config, RESUME_FREE_KEYS)


@lru_cache(maxsize=1)
def code_version() -> str:
    """A digest of fedkd's numeric source files and the versions of the libraries it computes
    with: an edit anywhere in them, or an upgrade, may change the next round's numbers."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for package in NUMERIC_PACKAGES:
        for source in sorted((root / package).rglob("*.py")):
            digest.update(str(source.relative_to(root)).encode() + b"\0" + source.read_bytes() + b"\0")
    for name in NUMERIC_DEPENDENCIES:
        try:
            digest.update(f"{name}={version(name)}\0".encode())
        except PackageNotFoundError:
            digest.update(f"{name}=none\0".encode())
    return f"sha256:{digest.hexdigest()[:16]}"
