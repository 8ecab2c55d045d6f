import math

import pytest
import torch

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
