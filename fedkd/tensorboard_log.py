"""TensorBoard logs of a run (``log = "tensorboard"``): ``tensorboard --logdir RUN_FOLDER``.

Scalars per round (tags below: accuracy, communication, privacy, fusion; clients/ for the
recorded metrics of fedkd/metric_specs.py) and the round's weight
matrix as an image (over the round's participants, in partition-id order: row i, how much the
i-th participant learned from the j-th; brighter = more). A round
that was not evaluated has no accuracy scalars. The ``tensorboard`` package is an optional extra
(``pip install 'fedkd[tensorboard]'``); it is imported only when this log is asked for.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps

from fedkd.metric_specs import recorded_names

TENSORBOARD_DIR = "tensorboard"  # inside the run folder
SCALARS = {  # tag -> the round record's key
    "accuracy/alma": "alma",
    "accuracy/alma_min": "alma_min",
    "accuracy/alma_se": "alma_se",
    "accuracy/global": "global_acc",
    "communication/bytes_up": "bytes_up",
    "communication/bytes_down": "bytes_down",
    "fusion/self_weight": "self_weight",
    "time/wall_s": "wall_s",
}
EPSILON_TAG = "privacy/epsilon_max"  # the largest cumulative epsilon of any client
WEIGHTS_TAG = "fusion/weights"
IMAGE_PIXELS = 256  # the weights image is about this wide, whatever the number of clients


def scalars() -> dict[str, str]:
    """Tag -> round-record key: fedkd's, then each recorded metric's round mean under clients/."""
    return {**SCALARS, **{f"clients/{name}": name for name in recorded_names()}}


def round_scalars(record: dict[str, Any]) -> dict[str, float]:
    """The scalars of one round: those it has (finite), by tag."""
    values = {tag: record.get(key) for tag, key in scalars().items()}
    if record.get("epsilon"):
        values[EPSILON_TAG] = max(record["epsilon"].values())
    return {tag: float(v) for tag, v in values.items() if v is not None and math.isfinite(float(v))}


def weights_image(weights: list[list[float]]) -> np.ndarray:
    """(H, W, 3) uint8: the P x P matrix (P participants) through the magma colour map, each
    cell a square block."""
    w = np.asarray(weights, dtype=np.float64)
    scaled = w / max(float(np.nanmax(w)) if w.size else 0.0, 1e-12)
    rgb = (colormaps["magma"](np.nan_to_num(scaled))[..., :3] * 255).astype(np.uint8)
    block = max(1, IMAGE_PIXELS // max(len(w), 1))
    return np.kron(rgb, np.ones((block, block, 1), dtype=np.uint8))


class TensorBoardLog:
    """Event files in ``folder/tensorboard``; a resumed run (``start_round`` > 1) has TensorBoard
    drop what an earlier attempt logged from that round on (purge_step)."""

    def __init__(self, folder: Path, start_round: int = 1) -> None:
        from torch.utils.tensorboard import SummaryWriter  # needs the optional tensorboard package

        purge = start_round if start_round > 1 else None
        self.writer = SummaryWriter(log_dir=str(folder / TENSORBOARD_DIR), purge_step=purge)

    def write(self, record: dict[str, Any]) -> None:
        step = int(record["round"])
        for tag, value in round_scalars(record).items():
            self.writer.add_scalar(tag, value, step)
        if record.get("weights"):
            self.writer.add_image(WEIGHTS_TAG, weights_image(record["weights"]), step, dataformats="HWC")
        self.writer.flush()  # a killed run keeps what it logged

    def close(self) -> None:
        self.writer.close()
