import pytest
import torch

from fedkd.config import ConfigError
from fedkd.models import MODELS, architecture_for, build_model, count_parameters


@pytest.mark.parametrize("name", MODELS.names())
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_every_model_maps_images_to_class_logits(name, shape):
    model = build_model(name, shape, 10, seed=0)
    out = model(torch.zeros(2, *shape))
    assert out.shape == (2, 10)
    assert count_parameters(model) > 0


def test_init_depends_only_on_seed_and_architecture():
    """One shared initial model per architecture and seed (what weight averaging needs)."""
    a = build_model("cnn-s", (1, 8, 8), 10, seed=1)
    b = build_model("cnn-s", (1, 8, 8), 10, seed=1)
    c = build_model("cnn-s", (1, 8, 8), 10, seed=2)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    assert any(not torch.equal(va, vc) for va, vc in zip(a.parameters(), c.parameters(), strict=True))


def test_building_a_model_does_not_touch_the_global_torch_rng():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    build_model("mlp", (1, 8, 8), 10, seed=0)
    assert torch.equal(torch.rand(1), before)


def test_architectures_cycle_or_follow_an_explicit_list():
    assert [architecture_for("mlp,cnn-s", k, 5) for k in range(5)] == ["mlp", "cnn-s", "mlp", "cnn-s", "mlp"]
    explicit = "mlp,cnn-s,lenet5"
    assert [architecture_for(explicit, k, 3) for k in range(3)] == ["mlp", "cnn-s", "lenet5"]
    with pytest.raises(ConfigError, match="unknown model 'vgg'"):
        architecture_for("mlp,vgg", 0, 3)
