"""LeNet-300-100 and LeNet-5 as used in Deep Compression (Han et al. 2016, Tables 2 and 3)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from netshrink.core.errors import ConfigError
from netshrink.models.data_shape import image_shape
from netshrink.models.registry import register_model


class LeNet300100(nn.Module):
    """Fully connected 784-300-100-10 (LeCun et al. 1998; Han et al. 2016 Table 2)."""

    def __init__(self, in_features: int = 784, num_classes: int = 10) -> None:
        super().__init__()
        if not isinstance(in_features, int) or isinstance(in_features, bool) or in_features < 1:
            raise ConfigError(f"lenet300_100 in_features must be a positive integer, got {in_features!r}")
        self.fc1 = nn.Linear(in_features, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, num_classes)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)  # (B, C*H*W)
        return self.fc3(self.relu(self.fc2(self.relu(self.fc1(x)))))


def _lenet5_feature_size(size: int, padding: int) -> int:
    """Height (or width) after LeNet-5's two stages: 5x5 conv (``size - 4 + 2 * padding``), then a
    2x2 max pool (halving, rounded down)."""
    for _ in range(2):
        size = (size - 4 + 2 * padding) // 2
    return size


def lenet5_smallest_input(padding: int) -> int:
    """The smallest height and width LeNet-5 with ``padding`` accepts (16 without padding, 4 with 2)."""
    return next(size for size in range(1, 17) if _lenet5_feature_size(size, padding) >= 1)


def lenet5_padding(height: int, width: int) -> int:
    """The padding LeNet-5 uses when none is given: 0, the paper's layout, on inputs of at least
    16x16; else 2 (a 5x5 conv keeps the size), which fits inputs down to 4x4 such as 8x8 digits."""
    return 0 if min(height, width) >= lenet5_smallest_input(0) else 2


class LeNet5(nn.Module):
    """conv 20 5x5 - pool - conv 50 5x5 - pool - fc 500 - fc classes (Han et al. 2016 Table 3).

    ``padding`` of both convs; ``None`` picks it from the input (``lenet5_padding``), so the same
    layout runs on 28x28 Fashion-MNIST (no padding) and 8x8 digits (padding 2).
    """

    def __init__(self, input_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10,
                 padding: int | None = None) -> None:
        super().__init__()
        if padding is None:
            channels, height, width = image_shape("lenet5", input_shape, lenet5_smallest_input(2))
            padding = lenet5_padding(height, width)
        elif not isinstance(padding, int) or isinstance(padding, bool) or padding < 0:
            raise ConfigError(f"lenet5 padding must be an integer >= 0 (or left out), got {padding!r}")
        else:
            channels, height, width = image_shape(
                "lenet5", input_shape, lenet5_smallest_input(padding),
                f" with padding={padding}; leave padding out to have it chosen from the input")
        self.conv1 = nn.Conv2d(channels, 20, 5, padding=padding)
        self.conv2 = nn.Conv2d(20, 50, 5, padding=padding)
        self.pool = nn.MaxPool2d(2)
        self.relu = nn.ReLU()
        height, width = _lenet5_feature_size(height, padding), _lenet5_feature_size(width, padding)
        self.fc1 = nn.Linear(50 * height * width, 500)
        self.fc2 = nn.Linear(500, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu(self.conv1(x)))  # (B, 20, H/2, W/2)
        x = self.pool(self.relu(self.conv2(x)))  # (B, 50, H/4, W/4)
        return self.fc2(self.relu(self.fc1(x.flatten(1))))


@register_model
def lenet300_100(in_features: int = 784, num_classes: int = 10) -> nn.Module:
    return LeNet300100(in_features, num_classes)


@register_model
def lenet5(input_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10,
           padding: int | None = None) -> nn.Module:
    return LeNet5(tuple(input_shape), num_classes, padding)
