"""Well-formed uploads with hostile values, for every registered algorithm (its card says what it
uploads: predictions, sparse predictions with a row mask, a subset of the rows, weights): arrays
of the right dtype and wire format that hold NaN, +-inf, negative entries, rows off the simplex,
entries above 1, a plausible but wrong shape, a forged row mask, or an extreme num-examples. The
run completes; a reply whose values break the protocol is recorded as refused and reaches nobody,
and a well-formed reply whose values are merely unusual (one-hot, uniform, shuffled rows,
rescaled weights) is accepted."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MetricRecord
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fedkd.compression import ROWS, SOFT, pack_mask, unpack_mask
from fedkd.data.sources import DATASETS
from fedkd.fusion import FUSIONS
from fedkd.protocol import KNOWLEDGE_KEY, METRICS_KEY, WEIGHTS_KEY
from tests.conftest import exercising, tiny_config
from tests.hostile import Hostile, refused, run_hostile

Mutation = Callable[[dict[str, np.ndarray], np.random.Generator], bool | None]  # -> refused?
ROW_FORGERIES = ("withheld", "moved", "dropped", "padding", "removed")


def _row_col(soft: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    return int(rng.integers(len(soft))), int(rng.integers(soft.shape[1]))


def _set(value: float) -> Mutation:
    def mutate(arrays, rng):
        soft = arrays[SOFT]
        soft[_row_col(soft, rng)] = value
        return True

    return mutate


def _negative(arrays, rng) -> bool:
    """One entry below zero, its mass moved to another: the row still sums to 1, one entry > 1."""
    soft = arrays[SOFT]
    row, col = _row_col(soft, rng)
    other = (col + 1) % soft.shape[1]
    drop = soft[row, col] + rng.uniform(0.01, 1.0)
    soft[row, col] -= drop
    soft[row, other] += drop
    return True


def _above_one(arrays, rng) -> bool:
    soft = arrays[SOFT]
    soft[_row_col(soft, rng)] = rng.uniform(1.01, 1e6)
    return True


def _rescaled_row(arrays, rng) -> bool:
    soft = arrays[SOFT]
    soft[int(rng.integers(len(soft)))] *= rng.choice([0.0, rng.uniform(0.0, 0.99), rng.uniform(1.01, 50.0)])
    return True


def _one_hot(arrays, rng) -> bool:
    soft = arrays[SOFT]
    arrays[SOFT] = np.eye(soft.shape[1], dtype=np.float32)[rng.integers(soft.shape[1], size=len(soft))]
    return False


def _uniform(arrays, rng) -> bool:
    arrays[SOFT] = np.full_like(arrays[SOFT], 1.0 / arrays[SOFT].shape[1])
    return False


def _shuffled_rows(arrays, rng) -> bool:
    arrays[SOFT] = arrays[SOFT][rng.permutation(len(arrays[SOFT]))]
    return False


def _shape(transfer_size: int) -> Mutation:
    """Uniform rows (on the simplex) of a plausible shape: refused unless it is the honest one."""

    def mutate(arrays, rng):
        rows, classes = arrays[SOFT].shape
        shapes = [(rows + 1, classes), (rows - 1, classes), (rows, classes + 1), (rows, classes - 1)]
        shapes += [(classes, rows), (transfer_size, classes), (rows * classes,)]
        shape = shapes[int(rng.integers(len(shapes)))]
        arrays[SOFT] = np.full(shape, 1.0 / shape[-1], dtype=np.float32)
        return shape != (rows, classes)

    return mutate


def _mask(how: str, total: int, sparse: bool) -> Mutation:
    """A forged row mask: a row withheld with its values or moved (well-formed: accepted where
    clients may withhold rows, else refused), a row dropped from the mask only, a bit set past the
    last row, or the mask removed."""

    def mutate(arrays, rng):
        present = unpack_mask(arrays[ROWS], total) if ROWS in arrays else np.ones(total, dtype=bool)
        if how == "removed":
            return arrays.pop(ROWS, None) is not None or None  # None: there was no mask to remove
        if how == "padding" and total % 8:
            arrays[ROWS] = pack_mask(present)
            arrays[ROWS][-1] |= 1
            return True
        on, off = np.flatnonzero(present), np.flatnonzero(~present)
        row = int(rng.integers(len(on)))
        present[on[row]] = False
        if how == "withheld":  # its values go too: a consistent sparse upload
            arrays[SOFT] = np.delete(arrays[SOFT], row, axis=0)
            arrays[ROWS] = pack_mask(present)
            return not sparse
        moved = how == "moved" and len(off) > 0
        if moved:
            present[off[int(rng.integers(len(off)))]] = True
        arrays[ROWS] = pack_mask(present)
        return not (moved and sparse)

    return mutate


def _weights(how: str) -> Mutation:
    def mutate(arrays, rng):
        name = sorted(arrays)[int(rng.integers(len(arrays)))]
        layer = arrays[name]
        if how in ("nan", "inf"):
            layer.reshape(-1)[int(rng.integers(layer.size))] = {"nan": np.nan, "inf": -np.inf}[how]
        elif how == "transposed":
            arrays[name] = np.ascontiguousarray(layer.T if layer.ndim > 1 else layer[:-1])
            return layer.ndim < 2 or layer.shape[0] != layer.shape[1]
        elif how == "flattened":
            arrays[name] = layer.reshape(-1)
            return layer.ndim > 1
        else:
            arrays[name] = layer * np.float32({"rescaled": rng.uniform(-3, 3), "huge": 1e30}[how])
            return False
        return True

    return mutate


def _num_examples(value: float, refused_when: bool) -> Mutation:
    def mutate(metrics, rng):
        metrics["num-examples"] = value
        return refused_when

    return mutate


def mutations(
    transfer_size: int, dataset: str, sparse: bool = False, rows: int | None = None
) -> dict[str, tuple[str, Mutation | None]]:
    """name -> (what it changes: predictions, weights or metrics; how); ``sparse``: the algorithm
    lets clients withhold rows; ``rows``: the transfer rows of the round (a subset's), if not all."""
    whole = DATASETS.get(dataset).train_size  # no client holds more than the whole train split
    total = rows or transfer_size  # what a row mask spans
    return {
        "honest": ("honest", None),
        **{f"soft-{v}": ("predictions", _set(v)) for v in (math.nan, math.inf, -math.inf)},
        "soft-negative": ("predictions", _negative),
        "soft-above-one": ("predictions", _above_one),
        "soft-row-sum": ("predictions", _rescaled_row),
        "soft-shape": ("predictions", _shape(transfer_size)),
        "soft-one-hot": ("predictions", _one_hot),
        "soft-uniform": ("predictions", _uniform),
        "soft-shuffled": ("predictions", _shuffled_rows),
        **{f"rows-{how}": ("predictions", _mask(how, total, sparse)) for how in ROW_FORGERIES},
        **{f"weights-{how}": ("weights", _weights(how)) for how in ("nan", "inf", "transposed", "flattened")},
        **{f"weights-{how}": ("weights", _weights(how)) for how in ("rescaled", "huge")},
        **{
            f"num-examples-{label}": ("metrics", _num_examples(v, refused_when=not 1 <= v <= whole))
            for label, v in {
                "one": 1.0,
                "zero": 0.0,
                "negative": -1.0,
                "more-than-the-data": whole + 1.0,
                "2^53": 2.0**53,
                "1e300": 1e300,
                "nan": math.nan,
                "inf": math.inf,
            }.items()
        },
    }


KINDS = {name: kind for name, (kind, _) in mutations(100, "digits").items()}


def _cases(algorithm: str) -> st.SearchStrategy:
    """(algorithm, a mutation of what its card says it uploads)."""
    card = FUSIONS.get(algorithm).card
    kinds = {"honest"}
    kinds |= {"predictions"} if card.uploads_predictions else set()
    kinds |= {"weights", "metrics"} if card.uploads_weights else set()
    return st.tuples(st.just(algorithm), st.sampled_from(sorted(n for n, k in KINDS.items() if k in kinds)))


def _tamper(reply: Message, kind: str, mutate: Mutation | None, rng: np.random.Generator) -> bool | None:
    """Apply one mutation to partition 1's honest reply in place; None: it has no such upload."""
    if kind == "honest":
        return False
    if kind == "metrics":
        metrics = dict(reply.content[METRICS_KEY])
        verdict = mutate(metrics, rng)
        reply.content[METRICS_KEY] = MetricRecord(metrics)
        return verdict
    key = WEIGHTS_KEY if kind == "weights" else KNOWLEDGE_KEY
    arrays = {name: np.array(array.numpy()) for name, array in reply.content[key].items()}
    if kind != "weights" and not len(arrays[SOFT]):
        return None
    verdict = mutate(arrays, rng)
    reply.content[key] = ArrayRecord({name: Array(np.ascontiguousarray(a)) for name, a in arrays.items()})
    return verdict


def _pinned(test: Callable) -> Callable:
    """Every CI pass sends each sparse algorithm a well-formed forged mask it must accept."""
    for algorithm in FUSIONS.names():
        if FUSIONS.get(algorithm).card.sparse:
            test = example(case=(algorithm, "rows-moved"), server_round=1, seed=0)(test)
    return test


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    case=st.sampled_from(FUSIONS.names()).flatmap(_cases),
    server_round=st.integers(1, 2),
    seed=st.integers(0, 2**32 - 1),
)
@_pinned
def test_a_well_formed_upload_with_hostile_values_is_refused_and_an_unusual_one_accepted(
    case, server_round, seed
):
    algorithm, name = case
    card = FUSIONS.get(algorithm).card
    cfg = tiny_config(**{"models": "mlp", **exercising(algorithm)})
    subset = FUSIONS.get(algorithm).transfer_rows(cfg, server_round)
    rows = len(subset) if subset is not None else None
    kind, mutate = mutations(cfg.data.transfer_size, cfg.data.dataset, card.sparse, rows)[name]
    verdicts: list[bool] = []

    def act(reply: Message, msg: Message, history: list[Message]) -> Message | None:
        if int(msg.metadata.group_id) != server_round:
            return None
        rng = np.random.default_rng(seed)
        verdict = _tamper(reply, kind, mutate, rng)
        if verdict is None:
            return None
        verdicts.append(verdict)
        return reply

    hostile = Hostile(cfg, act, phases=("train.local",))
    results = run_hostile(cfg, hostile)
    assert len(results.rounds) == cfg.run.rounds and results.payload["status"] == "completed"
    reasons = refused(results, hostile)
    this = (1, server_round, "train.local")
    if not verdicts:  # nothing of that kind in this upload (a sparse client that kept no row)
        assert not reasons
        return
    record = results.rounds[server_round - 1]
    if verdicts[0]:
        assert set(reasons) == {this}, (name, reasons)  # refused, and nobody else is
        assert 1 not in record["client_acc"]
        assert all(1 in later["client_acc"] for later in results.rounds[server_round:])  # not left out
    else:
        assert this not in reasons, (name, reasons.get(this))
        assert 1 in record["client_acc"]
    for past in results.rounds:  # no upload, refused or accepted, makes the weights or scores non-finite
        assert np.isfinite(past["weights"]).all() and math.isfinite(past["alma"])
