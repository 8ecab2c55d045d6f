"""Model zoo: heterogeneous client architectures, chosen by name from MODELS.

Every builder takes the input shape (C, H, W) and the class count and works for 8x8 digits,
28x28 greyscale and 32x32 RGB inputs (convolutions keep size, pooling is adaptive).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch
from torch import nn

from fedkd.config import DataConfig
from fedkd.data.sources import dataset_spec
from fedkd.errors import ConfigError
from fedkd.registry import Registry
from fedkd.seeding import derive_seed

Builder = Callable[[tuple[int, int, int], int], nn.Module]
MODELS: Registry[Builder] = Registry("model", plugins=Callable)  # a plugin: any builder, e.g. a class


@MODELS.register("mlp")
def mlp(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    c, h, w = input_shape
    return nn.Sequential(
        nn.Flatten(),  # (B, C*H*W)
        nn.Linear(c * h * w, 200),
        nn.ReLU(),
        nn.Linear(200, 100),
        nn.ReLU(),
        nn.Linear(100, num_classes),
    )


def _conv_net(input_shape: tuple[int, int, int], num_classes: int, width: int) -> nn.Module:
    c, _, _ = input_shape
    return nn.Sequential(
        nn.Conv2d(c, width, 3, padding=1),  # (B, width, H, W)
        nn.ReLU(),
        nn.MaxPool2d(2, ceil_mode=True),  # (B, width, H/2, W/2)
        nn.Conv2d(width, 2 * width, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),  # (B, 2*width, 2, 2)
        nn.Flatten(),
        nn.Linear(8 * width, num_classes),
    )


@MODELS.register("cnn-s")
def cnn_small(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    return _conv_net(input_shape, num_classes, width=16)


@MODELS.register("cnn-m")
def cnn_medium(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    return _conv_net(input_shape, num_classes, width=32)


@MODELS.register("lenet5")
def lenet5(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    c, _, _ = input_shape
    return nn.Sequential(
        nn.Conv2d(c, 6, 5, padding=2),  # (B, 6, H, W)
        nn.Tanh(),
        nn.AvgPool2d(2, ceil_mode=True),  # (B, 6, H/2, W/2)
        nn.Conv2d(6, 16, 3, padding=1),
        nn.Tanh(),
        nn.AdaptiveAvgPool2d(4),  # (B, 16, 4, 4)
        nn.Flatten(),
        nn.Linear(256, 120),
        nn.Tanh(),
        nn.Linear(120, 84),
        nn.Tanh(),
        nn.Linear(84, num_classes),
    )


class _BasicBlock(nn.Module):
    """ResNet basic block (He et al. 2016): two 3x3 convolutions with BatchNorm and a skip."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.skip = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.skip(x))


def _cifar_resnet(input_shape: tuple[int, int, int], num_classes: int, blocks_per_stage: int) -> nn.Module:
    """CIFAR-style ResNet (6n+2 layers): 3 stages of 16/32/64 channels, global average pool."""
    c, _, _ = input_shape
    layers: list[nn.Module] = [nn.Conv2d(c, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
    cin = 16
    for stage, width in enumerate((16, 32, 64)):
        for block in range(blocks_per_stage):
            layers.append(_BasicBlock(cin, width, stride=2 if stage > 0 and block == 0 else 1))
            cin = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes)]  # (B, 64) -> (B, C)
    return nn.Sequential(*layers)


@MODELS.register("resnet8")
def resnet8(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    return _cifar_resnet(input_shape, num_classes, blocks_per_stage=1)


@MODELS.register("resnet20")
def resnet20(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    return _cifar_resnet(input_shape, num_classes, blocks_per_stage=3)


def _depthwise_separable(cin: int, cout: int, stride: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin, bias=False),  # depthwise
        nn.BatchNorm2d(cin),
        nn.ReLU6(),
        nn.Conv2d(cin, cout, 1, bias=False),  # pointwise
        nn.BatchNorm2d(cout),
        nn.ReLU6(),
    )


@MODELS.register("mobilenet-s")
def mobilenet_small(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """A small MobileNet-v1-style net of depthwise separable convolutions (edge-device class)."""
    c, _, _ = input_shape
    return nn.Sequential(
        nn.Conv2d(c, 16, 3, padding=1, bias=False),  # (B, 16, H, W)
        nn.BatchNorm2d(16),
        nn.ReLU6(),
        _depthwise_separable(16, 32, 1),
        _depthwise_separable(32, 64, 2),  # (B, 64, H/2, W/2)
        _depthwise_separable(64, 64, 1),
        _depthwise_separable(64, 128, 2),  # (B, 128, H/4, W/4)
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(128, num_classes),
    )


def architecture_for(models: str, partition_id: int, num_clients: int) -> str:
    """Cycle through a comma list, or take the client's own entry when one per client."""
    names = parse_model_list(models)
    if len(names) > num_clients:
        raise ConfigError(
            f"models={models!r} lists {len(names)} architectures for {num_clients} clients; "
            f"allowed: at most one per client"
        )
    return names[partition_id % len(names)]


def parse_model_list(models: str) -> list[str]:
    names = [n.strip() for n in models.split(",") if n.strip()]
    if not names:
        raise ConfigError(f"models={models!r} is empty; allowed: a comma list of {MODELS.names()}")
    for name in names:
        MODELS.get(name)
    return names


_INIT_LOCK = threading.Lock()  # in-process clients build models on several threads at once


def build_model(
    name: str, input_shape: tuple[int, int, int], num_classes: int, seed: int, projection: int = 0
) -> nn.Module:
    """Build a freshly initialised model; init weights depend only on (seed, architecture).

    Every client of one architecture starts from the same weights, under every algorithm: the
    shared initial model that weight averaging needs (FedAvg's round 1 averages networks that
    start alike), and the same init for the same client and seed whatever the algorithm.
    ``projection`` > 0: the architecture's last layer maps to that width and a linear classifier
    follows (``projection-width``: one representation width for every architecture)."""
    with _INIT_LOCK, torch.random.fork_rng(devices=[]):  # the global RNG: one init at a time
        torch.manual_seed(derive_seed(seed, "model-init", name))
        if projection <= 0:
            return MODELS.get(name)(input_shape, num_classes)
        body = MODELS.get(name)(input_shape, projection)  # (B, projection): the representation
        return nn.Sequential(*body, nn.Linear(projection, num_classes))


def split_classifier(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(body, classifier): every zoo model is a Sequential whose last layer is its linear
    classifier; the body's output (B, D) is the representation (FedProto's prototypes)."""
    if not isinstance(model, nn.Sequential) or not isinstance(model[-1], nn.Linear):
        raise TypeError(f"{type(model).__name__} is not a Sequential ending in its linear classifier")
    return model[:-1], model[-1]


def representation_width(name: str, data: DataConfig, projection: int = 0) -> int:
    """D of architecture ``name``'s representation (the classifier's input) on ``dataset``."""
    if projection > 0:
        return projection
    spec = dataset_spec(data)
    _, classifier = split_classifier(build_model(name, spec.input_shape, spec.num_classes, 0))
    return int(classifier.in_features)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def model_layers(name: str, data: DataConfig, projection: int = 0) -> dict[str, tuple[tuple[int, ...], str]]:
    """Layer name -> (shape, dtype name) of architecture ``name`` on ``dataset``: what its weights
    look like on the wire, known without data (the server checks weight uploads against it)."""
    spec = dataset_spec(data)
    model = build_model(name, spec.input_shape, spec.num_classes, 0, projection)
    return {key: (tuple(value.shape), str(value.numpy().dtype)) for key, value in model.state_dict().items()}
