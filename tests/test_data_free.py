"""The data-free family (FD, FedProto): hand-computed rounds, the losses, the exchange on every
engine, hostile per-class uploads, privacy and resume (fedkd/fusion/class_knowledge.py)."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from flwr.app import Array, ArrayRecord, Message

from experiments.cli import main
from experiments.engines import run_experiment, run_inprocess
from fedkd.config import ConfigError, ExperimentConfig
from fedkd.fusion import FUSIONS
from fedkd.fusion.class_knowledge import class_means
from fedkd.fusion.fd import fd_loss
from fedkd.fusion.fedproto import fedproto_loss
from fedkd.models import build_model, representation_width
from fedkd.protocol import COUNTS, KNOWLEDGE_KEY, SOFT
from fedkd.results_files import load_results
from fedkd.validation import validate_config
from tests.conftest import tiny_config
from tests.hostile import Hostile, refused, run_hostile

NAN = np.nan
FEDPROTO = {"algorithm": "fedproto", "projection-width": 16}  # three architectures, one width


def test_class_means_average_each_class_and_mark_absent_ones():
    means, counts = class_means(np.array([[1.0, 1.0], [3.0, 3.0], [5.0, 7.0]]), np.array([0, 0, 2]), 3)
    np.testing.assert_array_equal(counts, [2.0, 0.0, 1.0])
    np.testing.assert_array_equal(means[[0, 2]], [[2.0, 2.0], [5.0, 7.0]])
    assert np.isnan(means[1]).all()


def test_fd_fuses_a_hand_computed_round():
    """Client k's teacher for class c: the mean over the *other* clients holding c; rows only for
    the classes k holds; a class nobody else holds gets none."""
    uploads = np.array(
        [
            [[0.8, 0.2], [NAN, NAN]],  # client 0 holds class 0 only
            [[0.6, 0.4], [0.3, 0.7]],
            [[0.4, 0.6], [0.1, 0.9]],
        ]
    )
    result = FUSIONS.get("fd").fuse_classes(uploads, None, ExperimentConfig())
    np.testing.assert_allclose(result.targets[0][0], [0.5, 0.5])  # (0.6 + 0.4) / 2, (0.4 + 0.6) / 2
    assert np.isnan(result.targets[0][1]).all()  # client 0 never trains on class 1
    np.testing.assert_allclose(result.targets[1], [[0.6, 0.4], [0.1, 0.9]])  # class 1: client 2 alone
    np.testing.assert_allclose(result.targets[2], [[0.7, 0.3], [0.3, 0.7]])
    # who-learned-from-whom, averaged over each client's classes with a teacher
    np.testing.assert_allclose(result.weights, [[0, 0.5, 0.5], [0.25, 0, 0.75], [0.25, 0.75, 0]])


def test_fedproto_weights_prototypes_by_class_counts():
    uploads = np.array([[[1.0, 2.0], [NAN, NAN]], [[3.0, 4.0], [5.0, 6.0]]])
    counts = np.array([[2.0, 0.0], [6.0, 1.0]])
    result = FUSIONS.get("fedproto").fuse_classes(uploads, counts, ExperimentConfig())
    expected = [[(2 * 1 + 6 * 3) / 8, (2 * 2 + 6 * 4) / 8], [5.0, 6.0]]
    for target in result.targets:  # one global prototype set, the same for every client
        np.testing.assert_allclose(target, expected)
    np.testing.assert_allclose(result.weights, [[0.125, 0.875], [0.125, 0.875]])  # (2/8 + 0) / 2


def _identity_classifier() -> torch.nn.Sequential:
    model = torch.nn.Sequential(torch.nn.Identity(), torch.nn.Linear(2, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.eye(2))
        model[1].bias.zero_()
    return model  # logits = representation = input


def test_fd_loss_is_cross_entropy_plus_weighted_kl_where_a_label_has_a_teacher():
    model, x, y = _identity_classifier(), torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([0, 1])
    teacher = torch.tensor([[0.7, 0.3], [0.0, 0.0]])  # class 1 has no teacher: adds 0
    weight, t = 0.5, 2.0
    student = F.softmax(x[0] / t, dim=0)
    kl = float((teacher[0] * (teacher[0].log() - student.log())).sum())
    expected = float(F.cross_entropy(x, y)) + weight * t**2 * kl / 2  # mean over the batch of 2
    assert float(fd_loss(teacher, weight, t)(model, x, y).detach()) == pytest.approx(expected, rel=1e-6)


def test_fedproto_loss_is_cross_entropy_plus_weighted_squared_distance():
    model, x, y = _identity_classifier(), torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([0, 1])
    prototypes, held = torch.tensor([[9.0, 9.0], [1.0, 1.0]]), torch.tensor([False, True])
    expected = float(F.cross_entropy(x, y)) + 0.3 * ((0 - 1) ** 2 + (2 - 1) ** 2) / 4  # mean over (B, D)
    loss = fedproto_loss(model, prototypes, held, 0.3)(model, x, y).detach()
    assert float(loss) == pytest.approx(expected, rel=1e-6)


def test_projection_width_gives_every_architecture_one_representation_width():
    digits = ExperimentConfig().data
    assert len({representation_width(m, digits) for m in ("mlp", "cnn-s", "lenet5")}) == 3
    assert {representation_width(m, digits, 16) for m in ("mlp", "cnn-s", "lenet5")} == {16}
    model = build_model("lenet5", (1, 8, 8), 10, seed=0, projection=16)
    assert model[-1].in_features == 16 and model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    # projection 0 is the zoo's model as it is: the same weights for the same seed
    plain, zero = build_model("mlp", (1, 8, 8), 10, 0), build_model("mlp", (1, 8, 8), 10, 0, 0)
    assert all(
        torch.equal(a, b)
        for a, b in zip(plain.state_dict().values(), zero.state_dict().values(), strict=True)
    )


@pytest.mark.parametrize(
    "overrides,words",
    [
        ({"algorithm": "fedproto"}, "needs one representation width, but models='mlp,cnn-s,lenet5' have"),
        ({**FEDPROTO, "mechanism": "gaussian"}, "uploads per-class prototypes"),
        ({"algorithm": "fd", "compression": "topk"}, "compression=topk with algorithm=fd"),
    ],
)
def test_data_free_settings_that_cannot_work_are_one_line_errors(overrides, words):
    with pytest.raises(ConfigError, match=words) as caught:
        validate_config(ExperimentConfig().with_overrides(overrides))
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("overrides", [{"algorithm": "fd"}, FEDPROTO], ids=["fd", "fedproto"])
def test_a_data_free_run_uploads_per_class_knowledge_and_keeps_local_budget(overrides):
    cfg = tiny_config(rounds=3, **overrides)
    rounds = run_experiment(cfg).rounds
    local = run_experiment(tiny_config(rounds=3, **{**overrides, "algorithm": "local"})).rounds  # same models
    for mine, theirs in zip(rounds, local, strict=True):
        assert mine["private_steps"] == theirs["private_steps"]  # step for step
        assert not any(mine["transfer_steps"].values()) and not mine["failed_clients"]
    # round 1 sends knowledge down with train.distill; later rounds also with train.local
    assert rounds[1]["bytes_down"] > rounds[0]["bytes_down"] > 0
    assert 0 < rounds[0]["bytes_up"] < 10 * 10 * 4 * cfg.data.num_clients + 4096  # C x D floats, not N_t x C
    assert any(any(row) for row in rounds[-1]["weights"])  # peers' knowledge was used
    # the knowledge changes the numbers: weight 0 is local with one extra inference
    quiet = tiny_config(rounds=3, **{**overrides, "fd-weight": 0.0, "fedproto-weight": 0.0})
    assert [r["client_acc"] for r in run_experiment(quiet).rounds] == [r["client_acc"] for r in local]
    assert [r["client_acc"] for r in rounds] != [r["client_acc"] for r in local]


@pytest.mark.parametrize("overrides", [{"algorithm": "fd"}, FEDPROTO], ids=["fd", "fedproto"])
def test_every_private_phase_is_regularised_while_knowledge_is_held(overrides):
    """The local phase (knowledge of the last round, resent with train.local) and the makeup and
    revisit steps after the exchange (knowledge with train.distill) each use the regulariser; at
    weight 0 both are plain cross-entropy, bit for bit."""
    from fedkd.client_steps import distill_step, local_step  # noqa: PLC0415

    cfg = tiny_config(**overrides)
    width = FUSIONS.get(cfg.fusion.algorithm).knowledge_width(cfg)
    knowledge = np.random.default_rng(0).dirichlet(np.ones(width), size=10)  # (C, D)
    quiet = cfg.with_overrides({"fd-weight": 0.0, "fedproto-weight": 0.0})

    def same(a, b) -> bool:
        return all(torch.equal(a[k], b[k]) for k in a)

    for step in (
        lambda c, k: local_step(c, 0, 2, None, True, k).state,
        lambda c, k: distill_step(c, 0, 2, None, k, evaluate=False).state,
    ):
        assert not same(step(cfg, knowledge), step(cfg, None))
        assert same(step(quiet, knowledge), step(cfg, None))


def test_a_round_without_fusion_keeps_the_regulariser_after_the_exchange():
    """Round 2's uploads are refused but one (min-replies 3): no fusion, yet the clients' makeup
    and revisit steps keep the knowledge of round 1 (sent again with train.distill)."""
    from server.exchange_base import Exchange  # noqa: PLC0415

    cfg = tiny_config(rounds=3, algorithm="fd", **{"min-replies": 3})

    def refuse_round_two(reply: Message, msg: Message, history: list[Message]) -> Message | None:
        return _set(SOFT, lambda a: a * 2)(reply, msg, history) if msg.metadata.group_id == "2" else None

    kept = run_hostile(cfg, Hostile(cfg, refuse_round_two, (1,), ("train.local",))).rounds
    with pytest.MonkeyPatch.context() as patch:  # the same run when the server sent nothing
        patch.setattr(Exchange, "distill_content", lambda self, pid: {})
        patch.setattr("server.class_exchange.ClassKnowledgeExchange.distill_content", lambda self, pid: {})
        dropped = run_hostile(cfg, Hostile(cfg, refuse_round_two, (1,), ("train.local",))).rounds
    assert kept[1]["weights"] == dropped[1]["weights"] and not any(map(any, kept[1]["weights"]))
    assert kept[1]["bytes_down"] > dropped[1]["bytes_down"]
    assert (
        kept[1]["client_acc"] != dropped[1]["client_acc"] or kept[2]["client_acc"] != dropped[2]["client_acc"]
    )


def _forge(mutate) -> callable:
    def act(reply: Message, msg: Message, history: list[Message]) -> Message:
        arrays = {name: arr.numpy() for name, arr in reply.content[KNOWLEDGE_KEY].items()}
        mutate(arrays)
        reply.content[KNOWLEDGE_KEY] = ArrayRecord(
            {n: Array(np.ascontiguousarray(a)) for n, a in arrays.items()}
        )
        return reply

    return act


def _set(name: str, change) -> callable:
    return _forge(lambda arrays: arrays.__setitem__(name, change(arrays[name].copy())))


HOSTILE_UPLOADS = {
    "fd row off the simplex": ("fd", _set(SOFT, lambda a: a * 2), "off the simplex"),
    "fd row partly NaN": (
        "fd",
        _set(SOFT, lambda a: np.where(np.arange(a.size).reshape(a.shape) == 0, np.nan, a)),
        "NaN",
    ),
    "fd wider rows": ("fd", _set(SOFT, lambda a: np.hstack([a, a]).astype(np.float32)), "shape"),
    "fedproto without counts": ("fedproto", _forge(lambda arrays: arrays.pop(COUNTS)), "no class counts"),
    "fedproto fractional counts": ("fedproto", _set(COUNTS, lambda c: c + np.float32(0.5)), "integers"),
    "fedproto counts beyond the data": ("fedproto", _set(COUNTS, lambda c: c * np.float32(1e6)), "at most"),
    "fedproto huge prototype": ("fedproto", _set(SOFT, lambda a: a + np.float32(1e30)), "within"),
    "fedproto inf prototype": ("fedproto", _set(SOFT, lambda a: a * np.float32(np.inf)), "finite"),
    "fedproto one count too many": (
        "fedproto",
        _set(COUNTS, lambda c: np.append(c, np.float32(1))),
        "one per present class",
    ),
    "fd no class at all": ("fd", _set(SOFT, lambda a: np.full_like(a, np.nan)), "holds no class"),
}


@pytest.mark.parametrize("shape", list(HOSTILE_UPLOADS))
def test_a_hostile_per_class_upload_is_refused_and_recorded(shape):
    algorithm, act, words = HOSTILE_UPLOADS[shape]
    cfg = tiny_config(**{"algorithm": algorithm, "projection-width": 16, "num-clients": 4})
    hostile = Hostile(cfg, act, (1,), ("train.local",))
    results = run_hostile(cfg, hostile)
    reasons = refused(results)
    assert len(results.rounds) == cfg.run.rounds and hostile.tampered
    for key in hostile.tampered:
        assert key in reasons and words in reasons[key], (key, reasons)
    for record in results.rounds:
        assert {0, 2, 3} <= set(record["client_acc"])  # the honest clients carry on


def test_fd_with_privacy_noises_and_accounts_class_rows(tmp_path):
    """The per-class uploads are C rows of probabilities: noised client-side and accounted with C
    rows per release (a run's epsilon grows each round)."""
    from fedkd.privacy import run_ledger  # noqa: PLC0415

    cfg = tiny_config(rounds=2, algorithm="fd", mechanism="gaussian", **{"noise-multiplier": 2.0})
    assert run_ledger(cfg).rows == 10  # the digits classes, not the 100 transfer rows
    rounds = run_experiment(cfg).rounds
    eps = [max(r["epsilon"].values()) for r in rounds]
    assert 0 < eps[0] < eps[1] and not rounds[-1]["failed_clients"]
    plain = run_experiment(tiny_config(rounds=2, algorithm="fd")).rounds
    assert [r["client_acc"] for r in rounds] != [
        r["client_acc"] for r in plain
    ]  # the noise reached the targets


@pytest.mark.parametrize("overrides", [{"algorithm": "fd"}, FEDPROTO], ids=["fd", "fedproto"])
def test_a_resumed_data_free_run_matches_an_uninterrupted_one(tmp_path, overrides):
    """The server's latest per-class knowledge is checkpointed with the round: a run resumed after
    round 2 continues with the knowledge round 3's local steps need."""
    from tests.cuts import numbers as _numbers  # noqa: PLC0415 - the cut machinery
    from tests.test_resume import InterruptAt  # noqa: PLC0415

    whole = tiny_config(rounds=4, **{**overrides, "out-dir": str(tmp_path / "whole")})
    reference = json.loads(json.dumps(run_inprocess(whole).rounds))
    cut = whole.with_overrides({"out-dir": str(tmp_path / "cut")})
    with pytest.raises(KeyboardInterrupt):
        run_inprocess(cut, client_app=InterruptAt(cut, server_round=3))
    assert len(load_results(tmp_path / "cut")["rounds"]) == 2
    result = CliRunner().invoke(main, ["run", "--resume", str(tmp_path / "cut")])
    assert result.exit_code == 0, result.output
    assert _numbers(load_results(tmp_path / "cut")["rounds"]) == _numbers(reference)


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [{"algorithm": "fd"}, FEDPROTO], ids=["fd", "fedproto"])
def test_data_free_numbers_are_identical_on_ray_and_inprocess(tmp_path, overrides):
    cfg = tiny_config(**overrides)
    inprocess = run_experiment(cfg).rounds
    ray = run_experiment(cfg.with_overrides({"engine": "ray", "out-dir": str(tmp_path)})).rounds
    keys = ("alma", "val_alma", "global_acc", "client_acc", "weights", "bytes_up", "bytes_down")
    assert [[r[k] for k in keys] for r in ray] == [[r[k] for k in keys] for r in inprocess]


def test_audit_measures_the_label_leak_of_per_class_uploads():
    """FedProto's counts are the label histogram (TV 0); FD's rows say which classes a client
    holds, a better estimate than a blind guess; noise hides neither (the rows are not noised)."""
    from experiments.audit import run_audit  # noqa: PLC0415 - scipy: only here

    base = {"models": "mlp", "rounds": 1, "alpha": 0.3, "num-clients": 6}
    proto = run_audit(tiny_config(**{**base, "algorithm": "fedproto"}), [3.0])["label_distribution"]
    assert all(row["tv"] < 1e-12 for row in proto)
    fd = run_audit(tiny_config(**{**base, "algorithm": "fd"}), [3.0])["label_distribution"]
    assert fd[0]["tv"] == fd[1]["tv"] > 0 and fd[0]["tv_ci"][1] < fd[0]["tv_prior_ci"][0]


@pytest.mark.slow
def test_fd_on_a_superlink_with_supernodes_gives_the_simulations_numbers(tmp_path):
    """The deployment engine (SuperLink + 3 SuperNodes on loopback, `flwr run`), heterogeneous
    models: the same per-client accuracies as the in-process simulation, round for round."""
    import subprocess  # noqa: PLC0415

    from experiments.deploy import superlink_command, supernode_command, write_connection  # noqa: PLC0415
    from tests.test_deployment import BIN, ROOT, _free_port, _rounds_done, _stop_group, _wait_port  # noqa: PLC0415

    cfg = tiny_config(algorithm="fd")
    reference = run_experiment(cfg).rounds
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env |= {"FLWR_HOME": str(tmp_path / "flwr-home"), "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}
    port, out, procs = _free_port(), tmp_path / "out", []
    write_connection(tmp_path / "flwr-home", "loopback", f"127.0.0.1:{port}", None)

    def start(cmd: list[str], log: str) -> subprocess.Popen:
        handle = open(tmp_path / log, "w")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            cmd, cwd=tmp_path, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
        procs.append(proc)
        return proc

    try:
        start(superlink_command(None, "127.0.0.1", port, tmp_path / "state.db", False), "superlink.log")
        _wait_port(port)
        for pid in range(3):
            start(supernode_command(f"127.0.0.1:{port}", None, None, pid, 3, _free_port()), f"node-{pid}.log")
        keys = ("num-clients", "rounds", "local-epochs", "distill-epochs", "revisit-epochs", "transfer-size")
        flat = cfg.to_run_config()
        overrides = (
            " ".join(f"{k}={flat[k]}" for k in keys) + f" algorithm='fd' min-replies=2 out-dir='{out}'"
        )
        run = start(
            [str(BIN / "flwr"), "run", str(ROOT), "loopback", "--run-config", overrides, "--stream"],
            "run.log",
        )
        deadline = time.monotonic() + 420
        while (
            _rounds_done(out / "results.json") < cfg.run.rounds
            and time.monotonic() < deadline
            and run.poll() is None
        ):
            time.sleep(0.5)
        deployed = load_results(out / "results.json")["rounds"]
    finally:
        for proc in reversed(procs):
            _stop_group(proc)
    assert len(deployed) == cfg.run.rounds, (tmp_path / "run.log").read_text()[-3000:]
    as_saved = json.loads(json.dumps(reference))  # partition ids as JSON keys
    for mine, theirs in zip(deployed, as_saved, strict=True):
        assert mine["client_acc"] == theirs["client_acc"] and mine["weights"] == theirs["weights"]


def test_the_published_sweeps_runs_keep_the_ids_they_were_recorded_with():
    """Adding keys (projection-width, fd-weight, fedproto-weight) must not rename finished runs: a
    sweep would rerun them all. Ids recorded in runs/fair-mnist/runs.jsonl before those keys existed."""
    from experiments.sweep import expand, load_sweep  # noqa: PLC0415

    planned = {
        (p.axes["alpha"], p.axes["algorithm"], p.axes["seed"]): p.run_id
        for p in expand(load_sweep("experiments/sweeps/fair-mnist.toml"))
    }
    assert planned[(0.1, "local", 1)] == "efe12ece17792b3f"
    assert planned[(0.5, "knfu", 0)] == "260ce441d23e6a0a"
