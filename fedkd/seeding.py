"""Every random choice derives from the run seed plus a tag path, so runs are reproducible.

Derived seeds are independent streams (``numpy.random.SeedSequence``) and do not depend on the
order in which clients happen to be called, which differs between engines.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch


def _tag(part: int | str) -> int:
    return part if isinstance(part, int) else zlib.crc32(part.encode())


def derive_seed(seed: int, *path: int | str) -> int:
    """A 31-bit seed for the stream named by ``path`` under ``seed``."""
    seq = np.random.SeedSequence([seed, *(_tag(p) for p in path)])
    return int(seq.generate_state(1)[0] & 0x7FFFFFFF)


def numpy_rng(seed: int, *path: int | str) -> np.random.Generator:
    return np.random.default_rng(derive_seed(seed, *path))


def torch_generator(seed: int, *path: int | str) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(seed, *path))
