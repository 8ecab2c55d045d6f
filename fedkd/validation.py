"""Checks on an ExperimentConfig that can be made without loading data.

Each failure is a ConfigError whose one-line message names the key, the bad value and what
is allowed. Checks that need the data (e.g. too many clients for a dataset) run when the
split is built, with the same error type. Here, not on ExperimentConfig: the allowed names come
from the registries, which import the config (a method would close an import loop).
"""

from __future__ import annotations

import importlib.util
import math
import re

from fedkd.compression import COMPRESSIONS, QUANT_BITS
from fedkd.config import (
    BUDGET_MATCHES,
    ENGINES,
    LOGS,
    NEIGHBOUR_RULES,
    WORKER_POOLS,
    ExperimentConfig,
    log_targets,
)
from fedkd.data.partition import PARTITIONERS
from fedkd.data.sources import DATASETS, NUM_CLASSES
from fedkd.errors import ConfigError
from fedkd.fusion import FUSIONS
from fedkd.fusion.ktpfl import SIMPLEX_MAPS, STEP_RULES
from fedkd.knowledge import DIVERGENCES
from fedkd.models import parse_model_list

MAX_CLIENT_THREADS = 256  # intra-op threads per client; more only exhausts memory


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _at_least(minimum: int, **values: int) -> None:
    for name, value in values.items():
        key = name.replace("_", "-")
        _require(value >= minimum, f"{key}={value} is invalid; allowed: >= {minimum}")


def _choice(key: str, value: str, allowed) -> None:
    _require(value in allowed, f"unknown {key} {value!r}; allowed: {', '.join(allowed)}")


def validate_config(cfg: ExperimentConfig) -> ExperimentConfig:
    """Raise ConfigError on the first bad value; return ``cfg`` so calls chain."""
    d, t, f, r, pv = cfg.data, cfg.train, cfg.fusion, cfg.run, cfg.privacy
    for key, value in cfg.to_run_config().items():
        if isinstance(value, float):
            _require(math.isfinite(value), f"{key}={value} is invalid; allowed: a finite number")
    _choice("mechanism", pv.mechanism, ("none", "gaussian", "laplace"))
    _choice("noise-on", pv.noise_on, ("probabilities", "logits"))
    _choice("sensitivity-model", pv.sensitivity_model, ("client", "row"))
    _choice("accountant", pv.accountant, ("analytic", "rdp"))
    _require(pv.noise_multiplier > 0, f"noise-multiplier={pv.noise_multiplier} is invalid; allowed: > 0")
    _choice("calibrate-from", pv.calibrate_from, ("noise-multiplier", "target-epsilon"))
    _require(pv.target_epsilon > 0, f"target-epsilon={pv.target_epsilon} is invalid; allowed: epsilon > 0")
    _require(0 < pv.delta < 1, f"delta={pv.delta} is invalid; allowed: 0 < delta < 1")
    _require(pv.clip > 0, f"clip={pv.clip} is invalid; allowed: > 0")
    _require(pv.max_epsilon >= 0, f"max-epsilon={pv.max_epsilon} is invalid; allowed: > 0 (0: no limit)")
    _choice("dataset", d.dataset, DATASETS.names())
    _choice("partitioner", d.partitioner, PARTITIONERS.names())
    _choice("algorithm", f.algorithm, FUSIONS.names())
    _choice("divergence", f.divergence, DIVERGENCES.names())
    _choice("neighbour-rule", f.neighbour_rule, NEIGHBOUR_RULES)
    _choice("engine", r.engine, ENGINES)
    names = parse_model_list(cfg.model.models)
    _require(d.num_clients >= 2, f"num-clients={d.num_clients} is too small; allowed: >= 2")
    _require(
        len(names) <= d.num_clients,
        f"models={cfg.model.models!r} lists {len(names)} architectures for "
        f"{d.num_clients} clients; allowed: at most one per client",
    )
    if d.transfer_dataset:
        _choice("transfer-dataset", d.transfer_dataset, DATASETS.names())
    _require(d.alpha > 0, f"alpha={d.alpha} is invalid; allowed: alpha > 0")
    _require(d.classes_per_client >= 1, f"classes-per-client={d.classes_per_client}; allowed: >= 1")
    _require(d.shards_per_client >= 1, f"shards-per-client={d.shards_per_client}; allowed: >= 1")
    _require(d.quantity_sigma > 0, f"quantity-sigma={d.quantity_sigma}; allowed: > 0")
    _require(
        d.max_client_samples >= 0, f"max-client-samples={d.max_client_samples}; allowed: >= 0 (0: no cap)"
    )
    _require(d.transfer_size >= 1, f"transfer-size={d.transfer_size} is invalid; allowed: >= 1")
    _require(d.min_partition_size >= 2, f"min-partition-size={d.min_partition_size}; allowed: >= 2")
    _require(d.min_local_test_size >= 1, f"min-local-test-size={d.min_local_test_size}; allowed: >= 1")
    _require(d.global_test_size >= 0, f"global-test-size={d.global_test_size}; allowed: >= 0 (0: all)")
    _require(r.eval_every >= 1, f"eval-every={r.eval_every} is invalid; allowed: >= 1")
    _require(
        0.0 < d.local_test_fraction < 1.0,
        f"local-test-fraction={d.local_test_fraction}; allowed: 0 < value < 1",
    )
    _require(0.0 <= d.val_fraction < 1.0, f"val-fraction={d.val_fraction}; allowed: 0 <= value < 1")
    _require(d.matched_test_size >= 0, f"matched-test-size={d.matched_test_size}; allowed: >= 0 (0: none)")
    _choice("budget-match", t.budget_match, BUDGET_MATCHES)
    _require(r.rounds >= 1, f"rounds={r.rounds} is invalid; allowed: rounds >= 1")
    _require(
        1 <= r.min_replies <= d.num_clients,
        f"min-replies={r.min_replies} is invalid; allowed: 1..num-clients ({d.num_clients})",
    )
    _at_least(1, local_epochs=t.local_epochs, batch_size=t.batch_size, client_threads=t.client_threads)
    _require(
        t.client_threads <= MAX_CLIENT_THREADS,
        f"client-threads={t.client_threads} is invalid; allowed: 1..{MAX_CLIENT_THREADS}",
    )
    _at_least(
        0,
        distill_epochs=t.distill_epochs,
        revisit_epochs=t.revisit_epochs,
        pretrain_epochs=t.pretrain_epochs,
        fedmd_pretrain_epochs=f.fedmd_pretrain_epochs,
    )
    _require(
        0 <= f.fedmd_subset <= d.transfer_size,
        f"fedmd-subset={f.fedmd_subset}; allowed: 0 (all) .. transfer-size ({d.transfer_size})",
    )
    _require(
        re.fullmatch(r"auto|cpu|cuda(:\d+)?", t.device) is not None,
        f"device={t.device!r} is invalid; allowed: auto, cpu, cuda, cuda:N",
    )
    _require(0 < r.fraction <= 1, f"fraction={r.fraction} is invalid; allowed: 0 < fraction <= 1")
    _require(r.reply_timeout >= 0, f"reply-timeout={r.reply_timeout}; allowed: >= 0 (0: wait for all)")
    _require(r.client_gpus >= 0, f"client-gpus={r.client_gpus}; allowed: >= 0")
    _require(r.workers >= 0, f"workers={r.workers} is invalid; allowed: >= 0 (0: every available core)")
    _require(
        r.workers <= MAX_CLIENT_THREADS, f"workers={r.workers} is invalid; allowed: 0..{MAX_CLIENT_THREADS}"
    )
    _choice("worker-pool", r.worker_pool, WORKER_POOLS)
    _require(r.min_nodes_wait > 0, f"min-nodes-wait={r.min_nodes_wait}; allowed: > 0 (seconds)")
    _require(t.learning_rate > 0, f"learning-rate={t.learning_rate}; allowed: > 0")
    _require(t.temperature > 0, f"temperature={t.temperature}; allowed: > 0")
    _require(f.beta >= 0, f"beta={f.beta} is invalid; allowed: beta >= 0")
    _require(f.dsfl_temperature > 0, f"dsfl-temperature={f.dsfl_temperature}; allowed: > 0")
    _require(0 < f.guard_fraction < 1, f"guard-fraction={f.guard_fraction}; allowed: 0 < value < 1")
    _require(f.guard_tolerance >= 0, f"guard-tolerance={f.guard_tolerance}; allowed: >= 0")
    algorithm = FUSIONS.get(f.algorithm)
    if algorithm.needs_one_architecture:
        _require(
            len(set(names)) == 1,
            f"algorithm={f.algorithm} averages weights and needs one architecture for all clients; "
            f"models={cfg.model.models!r} lists {len(set(names))}",
        )
    _require(
        pv.mechanism == "none" or not algorithm.uploads_weights,
        f"mechanism={pv.mechanism} noises predictions, but algorithm={f.algorithm} uploads its model "
        "weights unprotected; allowed: mechanism=none with this algorithm",
    )
    _choice("ktpfl-step-rule", f.ktpfl_step_rule, STEP_RULES)
    _choice("ktpfl-simplex", f.ktpfl_simplex, SIMPLEX_MAPS)
    _require(f.ktpfl_step_size > 0, f"ktpfl-step-size={f.ktpfl_step_size}; allowed: > 0")
    _require(f.ktpfl_rho >= 0, f"ktpfl-rho={f.ktpfl_rho}; allowed: >= 0")
    _require(f.ktpfl_steps >= 1, f"ktpfl-steps={f.ktpfl_steps}; allowed: >= 1")
    _require(f.feddf_server_steps >= 0, f"feddf-server-steps={f.feddf_server_steps}; allowed: >= 0")
    _require(
        0 < f.selective_quantile <= 1, f"selective-quantile={f.selective_quantile}; allowed: 0 < value <= 1"
    )
    _require(f.selective_kernel_width > 0, f"selective-kernel-width={f.selective_kernel_width}; allowed: > 0")
    _require(
        0 < f.selective_entropy <= 1, f"selective-entropy={f.selective_entropy}; allowed: 0 < value <= 1"
    )
    _choice("compression", f.compression, COMPRESSIONS)
    classes = NUM_CLASSES[d.dataset]
    _require(
        1 <= f.compression_k < classes,
        f"compression-k={f.compression_k} is invalid; allowed: 1 .. {classes - 1} (classes - 1)",
    )
    _require(
        f.compression_bits in QUANT_BITS,
        f"compression-bits={f.compression_bits} is invalid; allowed: {', '.join(map(str, QUANT_BITS))}",
    )
    _require(  # the rule `fedkd algorithms` prints as "compressible" (fedkd/fusion_cards.py)
        f.compression == "none" or algorithm.card.compressible,
        f"compression={f.compression} with algorithm={f.algorithm}: {algorithm.card.compression_refusal()}; "
        "allowed: compression=none with this algorithm",
    )
    _require(f.neighbour_top_m >= 1, f"neighbour-top-m={f.neighbour_top_m}; allowed: >= 1")
    _require(f.neighbour_threshold >= 0, f"neighbour-threshold={f.neighbour_threshold}; allowed: >= 0")
    _check_log(r.log)
    return cfg


def _check_log(log: str) -> None:
    """Known loggers only; TensorBoard needs its package (the optional extra)."""
    parts = [part.strip() for part in log.split(",") if part.strip()]
    _require(
        parts in ([], ["none"]) or all(part in LOGS for part in parts),
        f"log={log!r} is invalid; allowed: none, or a comma list of {', '.join(LOGS)}",
    )
    if "tensorboard" in log_targets(log) and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError(
            "log=tensorboard needs the tensorboard package; allowed: pip install 'fedkd[tensorboard]', "
            "or log=csv"
        )
