"""The Hugging Face hub path, used only behind an explicit ``download=true``.

Arrays fetched once are cached in the cache folder (fedkd/data/cache.py) so a second run needs
no network.
"""

from __future__ import annotations

import numpy as np

from fedkd.data.cache import cache_root, load_cached, save_cached
from fedkd.data.errors import DataError
from fedkd.data.integrity import check_counts

Split = tuple[np.ndarray, np.ndarray]


def _to_arrays(split, image_column: str) -> Split:
    images = np.stack([np.asarray(img, dtype=np.uint8) for img in split[image_column]])
    images = images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)  # (N, C, H, W)
    return images, np.asarray(split["label"], dtype=np.int64)


def fetch(name: str, source: tuple[str, str]) -> tuple[Split, Split]:
    """Dataset ``name`` from the hub: ``source`` is its (repository, image column), from its
    DatasetSpec's ``hub``."""
    repo, column = source
    cache = cache_root() / f"hub-{name}.npz"
    cached = load_cached(cache)
    if cached is not None:
        return (cached["train_x"], cached["train_y"]), (cached["test_x"], cached["test_y"])
    try:
        from datasets import load_dataset as hf_load

        hf = hf_load(repo)
    except Exception as exc:  # noqa: BLE001 - network and hub errors vary widely
        raise DataError(
            f"cannot download {repo} from the Hugging Face hub: {str(exc).splitlines()[0]}"
        ) from None
    train, test = _to_arrays(hf["train"], column), _to_arrays(hf["test"], column)
    check_counts(name, "train", train[1], f"{repo} (Hugging Face hub)")  # before it is cached
    check_counts(name, "test", test[1], f"{repo} (Hugging Face hub)")
    save_cached(cache, {"train_x": train[0], "train_y": train[1], "test_x": test[0], "test_y": test[1]})
    return train, test
