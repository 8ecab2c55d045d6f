"""A Flower client mod that noises soft predictions before they leave the client.

Being a mod, it sits between the ClientApp and the network in simulation and deployment alike:
the handler's reply to ``train.local`` passes through it, and only the noised array goes out.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from flwr.app import Context, Message
from flwr.clientapp.typing import ClientAppCallable

from fedkd.budget import compute_budget
from fedkd.config import ExperimentConfig
from fedkd.privacy import privatize
from fedkd.seeding import numpy_rng


def make_privacy_mod(resolve: Callable[[Context], ExperimentConfig]):
    from clients.client_app import partition_id, soft_record
    from fedkd.protocol import CONFIG_KEY, KNOWLEDGE_KEY, SOFT, TRAIN_LOCAL

    def privacy_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        reply = call_next(msg, context)
        if msg.metadata.message_type != TRAIN_LOCAL or not reply.has_content():
            return reply
        if KNOWLEDGE_KEY not in reply.content:
            return reply
        cfg = resolve(context)
        if cfg.privacy.mechanism == "none":
            return reply
        server_round = int(msg.content[CONFIG_KEY]["server-round"])
        # seeded for reproducible simulation; see docs/privacy.md for deployments
        rng = numpy_rng(cfg.run.seed, "privacy", partition_id(context), server_round)
        soft = reply.content[KNOWLEDGE_KEY][SOFT].numpy().astype(np.float64)
        reply.content[KNOWLEDGE_KEY] = soft_record(
            privatize(soft, cfg.privacy, compute_budget(cfg).temperature, rng)
        )
        return reply

    return privacy_mod
