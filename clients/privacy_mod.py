"""A Flower client mod that noises soft predictions before they leave the client.

Being a mod, it sits between the ClientApp and the network in simulation and deployment alike:
the handler's reply to ``train.local`` passes through it, and only the noised array goes out
(then compressed, when ``compression`` is on: clients/compression_mod.py, the outer mod). A
sparse upload (selective-fd) is noised on the rows it sends; its row mask is not noised and is
declared unprotected (fedkd/protocol.py).

Where the noise comes from: in a simulation that fedkd runs itself (``fedkd run``, any engine:
the config is bound into the app), from the run seed, so that runs repeat exactly. Everywhere
else (``flwr run`` against SuperNodes or Flower's own simulation), from the operating system's
secure random source, fresh for every release: the server knows the run seed, and noise it can
regenerate protects nothing.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

import numpy as np
from flwr.app import Array, Context, Message
from flwr.clientapp.typing import ClientAppCallable

from clients.records import carries_knowledge, partition_id
from fedkd.config import ExperimentConfig
from fedkd.privacy import privatize
from fedkd.protocol import CONFIG_KEY, KNOWLEDGE_KEY, SOFT
from fedkd.run_plan import run_plan
from fedkd.seeding import numpy_rng


def secret_rng() -> np.random.Generator:
    """A generator seeded with 256 bits from the OS's CSPRNG (``secrets``), never stored."""
    return np.random.default_rng(secrets.randbits(256))


def release_rng(cfg: ExperimentConfig, pid: int, server_round: int, seeded: bool) -> np.random.Generator:
    """The noise stream of one release: from the run seed (reproducible) or secret."""
    return numpy_rng(cfg.run.seed, "privacy", pid, server_round) if seeded else secret_rng()


def make_privacy_mod(resolve: Callable[[Context], ExperimentConfig], seeded: bool):
    """``seeded``: noise from the run seed (fedkd's own simulations), else from :func:`secret_rng`."""

    def privacy_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        reply = call_next(msg, context)
        if not carries_knowledge(msg, reply):
            return reply
        cfg = resolve(context)
        if cfg.privacy.mechanism == "none":
            return reply
        server_round = int(msg.content[CONFIG_KEY]["server-round"])
        rng = release_rng(cfg, partition_id(context), server_round, seeded)
        record = reply.content[KNOWLEDGE_KEY]
        soft = record[SOFT].numpy().astype(np.float64)  # (M, C): the rows this client sends
        if len(soft):
            noised = privatize(soft, cfg.privacy, run_plan(cfg).temperature, rng)
            record[SOFT] = Array(np.ascontiguousarray(noised, dtype=np.float32))
        return reply

    return privacy_mod
