"""A Flower client mod that compresses soft-prediction uploads (top-k or b-bit quantisation).

It is the outermost mod: the handler's ``train.local`` reply passes the privacy mod first, so what
is compressed is what would otherwise be sent (noised when noise is on). Compression after noise
is post-processing and costs no privacy. The server decodes with the same config
(``compression``, ``compression-k``, ``compression-bits``; fedkd/compression.py).
"""

from __future__ import annotations

from collections.abc import Callable

from flwr.app import Array, ArrayRecord, Context, Message
from flwr.clientapp.typing import ClientAppCallable

from clients.records import carries_knowledge
from fedkd.compression import ROWS, encode
from fedkd.config import ExperimentConfig
from fedkd.protocol import KNOWLEDGE_KEY, SOFT


def make_compression_mod(resolve: Callable[[Context], ExperimentConfig]):
    def compression_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        reply = call_next(msg, context)
        if not carries_knowledge(msg, reply):
            return reply
        fusion = resolve(context).fusion
        if fusion.compression == "none":
            return reply
        record = reply.content[KNOWLEDGE_KEY]
        arrays = encode(
            record[SOFT].numpy(), fusion.compression, fusion.compression_k, fusion.compression_bits
        )
        compressed = {name: Array(arr) for name, arr in arrays.items()}
        if ROWS in record:
            compressed[ROWS] = record[ROWS]
        reply.content[KNOWLEDGE_KEY] = ArrayRecord(compressed)
        return reply

    return compression_mod
