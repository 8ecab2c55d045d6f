"""What the ClientApp and its privacy mod both need: the node's partition id and how soft
predictions go over the wire. Its own module so that neither imports the other."""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message

from fedkd.protocol import COUNTS, KNOWLEDGE_KEY, TRAIN_LOCAL, sparse_arrays


def partition_id(context: Context) -> int:
    return int(context.node_config["partition-id"])


def soft_record(soft: np.ndarray, counts: np.ndarray | None = None) -> ArrayRecord:
    """Soft predictions go over the wire as float32: (M, C) rows present, plus the packed row mask
    when some rows (all-NaN in ``soft``, (N_t, C)) are withheld; per-class knowledge (C, D) the
    same way, with the (M,) class counts of the rows present when the algorithm sends them."""
    arrays = sparse_arrays(soft)
    if counts is not None:
        present = ~np.isnan(soft).all(axis=1)  # (C,)
        arrays[COUNTS] = np.ascontiguousarray(counts[present], dtype=np.float32)
    return ArrayRecord({name: Array(arr) for name, arr in arrays.items()})


def carries_knowledge(msg: Message, reply: Message) -> bool:
    """Whether ``reply`` answers a ``train.local`` with soft predictions: what the client mods
    (privacy noise, compression) rewrite before it leaves."""
    return msg.metadata.message_type == TRAIN_LOCAL and reply.has_content() and KNOWLEDGE_KEY in reply.content
