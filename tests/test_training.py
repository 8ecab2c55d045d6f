import math

import pytest
import torch
import torch.nn.functional as F

import fedkd.training as training
from fedkd.fused_adam import FusedAdam
from fedkd.losses import kd_loss
from fedkd.models import build_model
from fedkd.training import accuracy, distill, local_train, predict_proba


def test_kd_loss_is_zero_when_student_matches_target():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    target = torch.softmax(logits / 3.0, dim=1)
    assert float(kd_loss(logits, target, 3.0)) < 1e-7


def test_kd_loss_golden_value_with_t_squared_scaling():
    student = torch.zeros(1, 2)  # uniform at any T
    target = torch.tensor([[0.75, 0.25]])
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert float(kd_loss(student, target, 1.0)) == pytest.approx(kl)
    assert float(kd_loss(student, target, 4.0)) == pytest.approx(16 * kl)


def _toy(n=64):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = (x.mean(dim=(1, 2, 3)) > 0).long()
    return x, y


def test_local_training_learns_and_is_deterministic():
    x, y = _toy()
    states = []
    for _ in range(2):
        model = build_model("mlp", (1, 8, 8), 2, seed=0)
        local_train(
            model, x, y, epochs=15, batch_size=16, lr=0.01, generator=torch.Generator().manual_seed(1)
        )
        states.append(model.state_dict())
        assert accuracy(model, x, y) > 0.9
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_distillation_moves_student_towards_target():
    x, _ = _toy()
    target = torch.tensor([[0.9, 0.1]]).repeat(len(x), 1)
    model = build_model("cnn-s", (1, 8, 8), 2, seed=0)
    before = kd_loss(model(x), target, 2.0).item()
    distill(
        model,
        x,
        target,
        temperature=2.0,
        epochs=20,
        batch_size=16,
        lr=0.01,
        generator=torch.Generator().manual_seed(0),
    )
    after = kd_loss(model(x), target, 2.0).item()
    assert after < before * 0.5
    probs = predict_proba(model, x, temperature=2.0)
    assert probs.shape == (len(x), 2)
    assert abs(probs.sum(axis=1) - 1).max() < 1e-6


def test_local_train_is_fused_adam_over_the_seeded_batches():
    """The step, pinned bit for bit: fused Adam over mini-batches in the generator's order, an epoch
    of ``samples_per_epoch`` chaining fresh permutations, and FitStats counting samples and steps."""
    x, y = _toy(40)
    model = build_model("mlp", (1, 8, 8), 2, seed=0)
    fit = local_train(
        model,
        x,
        y,
        epochs=2,
        batch_size=16,
        lr=0.01,
        generator=torch.Generator().manual_seed(1),
        samples_per_epoch=56,
    )
    expected = build_model("mlp", (1, 8, 8), 2, seed=0)
    optimizer = torch.optim.Adam(expected.parameters(), lr=0.01, fused=True)
    g = torch.Generator().manual_seed(1)
    for _ in range(2):
        order = torch.cat([torch.randperm(40, generator=g), torch.randperm(40, generator=g)])[:56]
        for start in range(0, 56, 16):
            idx = order[start : start + 16]
            optimizer.zero_grad()
            F.cross_entropy(expected(x[idx]), y[idx]).backward()
            optimizer.step()
    assert (fit.samples, fit.steps) == (112, 8)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in expected.state_dict().items())


def test_batches_are_the_same_rows_whatever_the_gather_chunk(monkeypatch):
    """Rows are gathered a chunk at a time; chunk borders must not change what a step sees."""
    x, y = _toy(100)
    states = []
    for rows in (24, training.GATHER_ROWS):  # 24: not a whole number of batches
        monkeypatch.setattr(training, "GATHER_ROWS", rows)
        model = build_model("cnn-s", (1, 8, 8), 2, seed=0)
        local_train(model, x, y, epochs=1, batch_size=16, lr=0.01, generator=torch.Generator().manual_seed(2))
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_convolutions_run_channels_last_and_weights_come_back_contiguous():
    """Channels-last weights inside the loops (fast oneDNN kernels), the default layout outside;
    evaluation (inference mode) leaves weights that can still be trained."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(48, 1, 8, 8, generator=g), torch.randint(0, 2, (48,), generator=g)
    model = build_model("cnn-s", (1, 8, 8), 2, seed=0)
    conv = model[3]  # (32, 16, 3, 3): its layout is unambiguous
    seen = []
    conv.register_forward_hook(
        lambda m, i, o: seen.append(m.weight.is_contiguous(memory_format=torch.channels_last))
    )
    predict_proba(model, x, temperature=1.0)
    assert not any(p.is_inference() for p in model.parameters())
    local_train(model, x, y, epochs=1, batch_size=16, lr=0.01, generator=torch.Generator().manual_seed(0))
    assert len(seen) == 4 and all(seen)
    assert all(v.is_contiguous() for v in model.state_dict().values())


def test_convolutional_models_evaluate_in_cache_sized_batches_on_cpu():
    """A conv net on CPU sees at most CPU_CONV_EVAL_BATCH rows per forward (its activations stay in
    cache), a dense model whole EVAL_BATCH batches; the predictions do not depend on the batching."""
    x, _ = _toy(200)
    rows = {}
    for name in ("cnn-s", "mlp"):
        model = build_model(name, (1, 8, 8), 2, seed=0)
        seen = rows.setdefault(name, [])
        model.register_forward_hook(lambda m, i, o, seen=seen: seen.append(len(o)))
        probs = predict_proba(model, x, temperature=1.0)
        one_by_one = predict_proba(model, x, temperature=1.0, batch_size=1)
        assert abs(probs - one_by_one).max() < 1e-5
    assert rows["cnn-s"][:4] == [training.CPU_CONV_EVAL_BATCH] * 3 + [200 - 3 * training.CPU_CONV_EVAL_BATCH]
    assert rows["mlp"][0] == 200


def test_lean_fused_adam_equals_torch_adam_bit_for_bit():
    """training's own Adam loop is torch.optim.Adam(fused=True) without its bookkeeping: the same
    weights after several steps, channels-last weights included, and a parameter without a
    gradient in a step is left alone (no moment update, no step count), as Adam does."""
    x, y = _toy(32)
    models = [
        build_model("cnn-s", (1, 8, 8), 2, seed=0).to(memory_format=torch.channels_last) for _ in range(2)
    ]
    ours = FusedAdam(models[0].parameters(), lr=0.01)
    assert ours.one_group  # the fused kernel called directly
    theirs = torch.optim.Adam(models[1].parameters(), lr=0.01, fused=True)
    for step in range(4):
        for model, optimizer in zip(models, (ours, theirs), strict=True):
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            if step == 1:
                model[-1].bias.grad = None  # this step leaves the last bias out
            optimizer.step()
    assert all(torch.equal(v, models[1].state_dict()[k]) for k, v in models[0].state_dict().items())


def test_a_fused_adam_step_without_gradients_changes_nothing():
    """As torch's Adam: a step where no weight has a gradient is a no-op (the kernels refuse
    empty lists)."""
    model = build_model("mlp", (1, 8, 8), 2, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = FusedAdam(model.parameters(), lr=0.01)
    optimizer.step()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(int(step) == 0 for step in optimizer.steps)


def test_fused_adam_over_mixed_dtypes_equals_torch_adam():
    """Parameters of two dtypes (two kernel groups) take torch's own grouping: still Adam's weights."""
    x, y = _toy(32)
    models = [build_model("mlp", (1, 8, 8), 2, seed=0) for _ in range(2)]
    for model in models:
        model[-1].double()  # the last layer in float64
    ours = FusedAdam(models[0].parameters(), lr=0.01)
    assert not ours.one_group
    theirs = torch.optim.Adam(models[1].parameters(), lr=0.01, fused=True)
    for _ in range(3):
        for model, optimizer in zip(models, (ours, theirs), strict=True):
            optimizer.zero_grad()
            F.cross_entropy(model[-1](model[:-1](x).double()), y).backward()
            optimizer.step()
    assert all(torch.equal(v, models[1].state_dict()[k]) for k, v in models[0].state_dict().items())
