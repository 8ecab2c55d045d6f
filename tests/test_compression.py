"""Compressed soft-label uploads: golden encodings, what the server decodes, what the bytes say,
and the order of noise and compression on the client."""

from __future__ import annotations

import numpy as np
import pytest

from experiments.engines import run_experiment
from fedkd.compression import QUANT, TOPK_INDEX, TOPK_VALUE, decode, encode, pack_mask, unpack_mask
from fedkd.config import ConfigError
from fedkd.knowledge import softmax
from fedkd.protocol import ProtocolError, dense_soft
from tests.conftest import tiny_config


def test_topk_golden_keeps_the_k_largest_and_spreads_the_rest_evenly():
    row = np.array([[0.15, 0.5, 0.05, 0.3]])
    arrays = encode(row, "topk", k=2)
    assert arrays[TOPK_INDEX].tolist() == [[1, 3]] and arrays[TOPK_INDEX].dtype == np.uint8
    np.testing.assert_allclose(arrays[TOPK_VALUE], [[0.5, 0.3]])
    decoded = decode(arrays, 1, 4, "topk", 2, 8)
    np.testing.assert_allclose(decoded, [[0.1, 0.5, 0.1, 0.3]], atol=1e-7)  # (1 - 0.8) / 2 each


def test_quant_golden_two_bits_pack_four_entries_per_byte():
    row = np.array([[0.7, 0.2, 0.1, 0.0]])  # levels round(3 p) = 2, 1, 0, 0
    arrays = encode(row, "quant", bits=2)
    assert arrays[QUANT].tolist() == [0b10_01_00_00]  # first entry in the highest bits
    # level 0 reads as a quarter level: 2, 1, 0.25, 0.25 over 3.5
    np.testing.assert_allclose(
        decode(arrays, 1, 4, "quant", 2, 2), [[2 / 3.5, 1 / 3.5, 0.25 / 3.5, 0.25 / 3.5]]
    )


def test_quant_golden_four_bits_and_a_row_that_rounds_to_zero_becomes_uniform():
    rows = np.array([[1.0, 0.0], [0.5, 0.5]])
    arrays = encode(rows, "quant", bits=4)  # levels 15, 0, 8, 8 (round half to even: 7.5 -> 8)
    assert arrays[QUANT].tolist() == [0xF0, 0x88]
    flat = np.array([[0.2, 0.2, 0.2, 0.2, 0.2]])  # round(0.2 * 3) = 1 each at 2 bits: stays flat
    np.testing.assert_allclose(decode(encode(flat, "quant", bits=2), 1, 5, "quant", 2, 2), flat)
    tiny = np.full((1, 10), 0.1)  # round(0.1 * 3) = 0: every level is zero -> uniform
    np.testing.assert_allclose(decode(encode(tiny, "quant", bits=2), 1, 10, "quant", 2, 2), tiny)


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_decoded_quantised_rows_are_never_zero_so_log_domain_fusion_sees_no_veto(bits):
    soft = softmax(np.random.default_rng(1).normal(size=(40, 10)) * 4)  # many entries round to 0
    decoded = decode(encode(soft, "quant", bits=bits), 40, 10, "quant", 0, bits)
    assert decoded.min() > 0 and np.log(decoded).min() > -12  # log 1e-12 = -27.6 was the veto
    np.testing.assert_allclose(decoded.sum(axis=1), 1.0)


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_quantisation_error_is_bounded_by_half_a_level_before_renormalising(bits):
    soft = softmax(np.random.default_rng(0).normal(size=(50, 10)) * 2)
    arrays = encode(soft, "quant", bits=bits)
    assert arrays[QUANT].nbytes == (50 * 10 * bits + 7) // 8
    decoded = decode(arrays, 50, 10, "quant", 0, bits)
    np.testing.assert_allclose(decoded.sum(axis=1), 1.0)
    levels = np.rint(soft * ((1 << bits) - 1)) / ((1 << bits) - 1)
    assert np.abs(levels - soft).max() <= 0.5 / ((1 << bits) - 1) + 1e-12
    if bits == 8:
        assert np.abs(decoded - soft).max() < 0.01


def test_mask_packs_eight_rows_per_byte_and_refuses_stray_bits():
    mask = np.array([True, False, True, True, False, False, False, False, True, False])
    packed = pack_mask(mask)
    assert packed.tolist() == [0b10110000, 0b10000000]
    np.testing.assert_array_equal(unpack_mask(packed, 10), mask)
    with pytest.raises(ValueError, match="past the last row"):
        unpack_mask(np.array([0b10110000, 0b10100000], dtype=np.uint8), 10)


@pytest.mark.parametrize(
    "arrays, fragment",
    [
        ({TOPK_INDEX: np.array([[1, 1]], dtype=np.uint8), TOPK_VALUE: np.array([[0.5, 0.3]])}, "repeated"),
        (
            {TOPK_INDEX: np.array([[0, 9]], dtype=np.uint8), TOPK_VALUE: np.array([[0.5, 0.3]])},
            "out of range",
        ),
        ({TOPK_INDEX: np.array([[0, 1]], dtype=np.uint8), TOPK_VALUE: np.array([[0.9, 0.3]])}, "more than 1"),
        ({QUANT: np.zeros(3, dtype=np.uint8)}, "compression=topk sends"),
    ],
)
def test_malformed_compressed_uploads_are_protocol_errors(arrays, fragment):
    cfg = tiny_config(compression="topk", **{"compression-k": 2}).fusion
    with pytest.raises(ProtocolError, match=fragment):
        dense_soft(arrays, 1, 4, cfg)


def test_compression_is_checked_where_configured():
    with pytest.raises(
        ConfigError, match="compression=quant with algorithm=local: it uploads nothing, and compr"
    ):
        tiny_config(algorithm="local", compression="quant")
    with pytest.raises(ConfigError, match="compression-bits=3"):
        tiny_config(compression="quant", **{"compression-bits": 3})
    with pytest.raises(ConfigError, match="compression-k=10"):
        tiny_config(compression="topk", **{"compression-k": 10})


def test_bytes_up_measure_what_is_sent():
    """100 rows x 10 classes: float32 4000 bytes, 2-bit 250 bytes, top-2 1000 bytes (+ npy headers)."""
    up = {}
    for name, extra in [
        ("none", {}),
        ("quant2", {"compression": "quant", "compression-bits": 2}),
        ("top2", {"compression": "topk", "compression-k": 2}),
    ]:
        rounds = run_experiment(tiny_config(algorithm="fedmd", rounds=1, **extra)).rounds
        assert not rounds[0]["failed_clients"] and np.isfinite(rounds[0]["alma"])
        up[name] = rounds[0]["bytes_up"] / 3  # per client
    header = up["none"] - 4000
    assert 0 < header < 200
    assert up["quant2"] == 250 + header
    assert up["top2"] == 1000 + 2 * header  # two arrays: indices and values


def test_noise_comes_before_compression_on_the_client():
    """With both on, the server decodes quant(privatize(p)): the mod order noises first."""
    from flwr.app import ConfigRecord, Context, Message, RecordDict

    from clients.client_app import make_client_app
    from clients.privacy_mod import release_rng
    from experiments.engines import task_identity
    from fedkd.budget import compute_budget
    from fedkd.client_steps import local_step
    from fedkd.privacy import privatize
    from fedkd.protocol import CONFIG_KEY, KNOWLEDGE_KEY

    cfg = tiny_config(compression="quant", mechanism="gaussian", **{"noise-multiplier": 0.05})
    content = RecordDict({CONFIG_KEY: ConfigRecord({"server-round": 1, "upload": "predictions"})})
    with task_identity(1):
        reply = make_client_app(cfg)(
            Message(content, dst_node_id=1, message_type="train.local"),
            Context(1, 1, {"partition-id": 0}, RecordDict(), {}),
        )
    arrays = {name: arr.numpy() for name, arr in reply.content[KNOWLEDGE_KEY].items()}
    assert set(arrays) == {QUANT}
    clean = local_step(cfg, 0, 1, None, predict=True).predictions
    noised = privatize(clean, cfg.privacy, compute_budget(cfg).temperature, release_rng(cfg, 0, 1, True))
    np.testing.assert_array_equal(arrays[QUANT], encode(noised, "quant", bits=8)[QUANT])
    assert not np.array_equal(arrays[QUANT], encode(clean, "quant", bits=8)[QUANT])


def test_sparse_uploads_are_compressed_too():
    """selective-fd: the packed row mask travels beside the quantised kept rows."""
    cfg = tiny_config(algorithm="selective-fd", rounds=1, **{"selective-quantile": 0.5})
    dense = run_experiment(cfg).rounds[0]
    packed = run_experiment(cfg.with_overrides({"compression": "quant", "compression-bits": 4})).rounds[0]
    assert not packed["failed_clients"] and np.isfinite(packed["alma"])
    assert packed["bytes_up"] < 0.4 * dense["bytes_up"]
