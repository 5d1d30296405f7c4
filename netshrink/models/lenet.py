"""LeNet-300-100 and LeNet-5 as used in Deep Compression (Han et al. 2016, Tables 2 and 3)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from netshrink.models.registry import register_model


class LeNet300100(nn.Module):
    """Fully connected 784-300-100-10 (LeCun et al. 1998; Han et al. 2016 Table 2)."""

    def __init__(self, in_features: int = 784, num_classes: int = 10) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, num_classes)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)  # (B, C*H*W)
        return self.fc3(self.relu(self.fc2(self.relu(self.fc1(x)))))


class LeNet5(nn.Module):
    """conv 20 5x5 - pool - conv 50 5x5 - pool - fc 500 - fc classes (Han et al. 2016 Table 3).

    ``padding`` lets the same layout run on small inputs (8x8 digits use padding 2).
    """

    def __init__(self, input_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10,
                 padding: int = 0) -> None:
        super().__init__()
        channels, height, width = input_shape
        self.conv1 = nn.Conv2d(channels, 20, 5, padding=padding)
        self.conv2 = nn.Conv2d(20, 50, 5, padding=padding)
        self.pool = nn.MaxPool2d(2)
        self.relu = nn.ReLU()
        for _ in range(2):  # each stage: conv (size - 4 + 2p), then pool /2
            height, width = (height - 4 + 2 * padding) // 2, (width - 4 + 2 * padding) // 2
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
def lenet5(input_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10, padding: int = 0) -> nn.Module:
    return LeNet5(tuple(input_shape), num_classes, padding)
