"""Efficient building blocks: MobileNet v1's depthwise separable block, the ShuffleNet unit, the Ghost module.

Each block is the paper's, at the sizes of a 28x28 student; the zoo models in
``netshrink/models/{mobilenet,shufflenet,ghostnet}.py`` stack them.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from netshrink.core.errors import ConfigError


def conv_bn(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1, relu: bool = True) -> nn.Sequential:
    """Conv (``same`` padding for odd kernels, no bias) then BatchNorm, then ReLU if ``relu``."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
                               nn.BatchNorm2d(cout)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def scaled(channels: int, width: float, divisor: int = 1) -> int:
    """``channels * width`` rounded to a multiple of ``divisor`` (at least ``divisor``)."""
    return max(divisor, int(round(channels * width / divisor)) * divisor)


def check_width(model: str, width: object) -> float:
    """``width`` (a zoo student's width multiplier) as a float, or a one-line ConfigError."""
    if not isinstance(width, (int, float)) or isinstance(width, bool) or not 0 < width <= 16:
        raise ConfigError(f"{model} width must be a number in (0, 16], got {width!r}")
    return float(width)


class DepthwiseSeparable(nn.Sequential):
    """3x3 depthwise conv-BN-ReLU, then 1x1 pointwise conv-BN-ReLU (Howard et al. 2017, Fig. 3)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__(conv_bn(cin, cin, 3, stride, groups=cin), conv_bn(cin, cout, 1))


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave the channels of ``groups`` groups (Zhang et al. 2018, "ShuffleNet", sec. 3.1, Fig. 1c):
    reshape to (groups, C / groups), transpose, flatten."""
    batch, channels, height, width = x.shape
    x = x.view(batch, groups, channels // groups, height, width)  # (B, g, C/g, H, W)
    return x.transpose(1, 2).reshape(batch, channels, height, width)


class ShuffleUnit(nn.Module):
    """ShuffleNet unit (Zhang et al. 2018, sec. 3.2, Fig. 2b and 2c).

    1x1 group conv to a bottleneck of a quarter of the output channels, channel shuffle, 3x3
    depthwise conv (stride ``stride``), 1x1 group conv back. Stride 1: added to the input. Stride 2:
    the branch makes ``cout - cin`` channels, concatenated with a 3x3 average-pooled input.
    """

    def __init__(self, cin: int, cout: int, stride: int = 1, groups: int = 3) -> None:
        super().__init__()
        if stride == 1 and cin != cout:
            raise ValueError(f"a stride-1 ShuffleNet unit keeps its channels, got {cin} -> {cout}")
        self.stride, self.groups = stride, groups
        branch_out = cout - cin if stride == 2 else cout
        bottleneck = scaled(cout, 0.25, groups)
        self.reduce = conv_bn(cin, bottleneck, 1, groups=groups)
        self.depthwise = conv_bn(bottleneck, bottleneck, 3, stride, groups=bottleneck, relu=False)
        self.expand = conv_bn(bottleneck, branch_out, 1, groups=groups, relu=False)
        self.pool = nn.AvgPool2d(3, 2, 1) if stride == 2 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = self.expand(self.depthwise(channel_shuffle(self.reduce(x), self.groups)))
        if self.pool is None:
            return torch.relu(x + branch)
        return torch.relu(torch.cat([self.pool(x), branch], dim=1))  # (B, cout, H/2, W/2)


class GhostModule(nn.Module):
    """Ghost module (Han et al. 2020, "GhostNet", sec. 3.1, Fig. 2b): a 1x1 conv makes
    ``ceil(cout / ratio)`` intrinsic feature maps, a cheap 3x3 depthwise conv makes ``ratio - 1``
    "ghost" maps from each, and the first ``cout`` of both are the output."""

    def __init__(self, cin: int, cout: int, ratio: int = 2, relu: bool = True) -> None:
        super().__init__()
        self.out_channels = cout
        intrinsic = math.ceil(cout / ratio)
        self.primary = conv_bn(cin, intrinsic, 1, relu=relu)
        self.cheap = conv_bn(intrinsic, intrinsic * (ratio - 1), 3, groups=intrinsic, relu=relu)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        intrinsic = self.primary(x)
        return torch.cat([intrinsic, self.cheap(intrinsic)], dim=1)[:, :self.out_channels]  # (B, cout, H, W)


class GhostBottleneck(nn.Module):
    """Ghost bottleneck (Han et al. 2020, sec. 3.2, Fig. 3; squeeze-excitation left out): a Ghost
    module expands, a 3x3 depthwise conv downsamples when ``stride`` is 2, a Ghost module without
    ReLU projects; the shortcut is the identity, or a depthwise then 1x1 conv when the shape changes."""

    def __init__(self, cin: int, hidden: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.expand = GhostModule(cin, hidden)
        self.downsample = conv_bn(hidden, hidden, 3, stride, groups=hidden, relu=False) if stride == 2 else None
        self.project = GhostModule(hidden, cout, relu=False)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(conv_bn(cin, cin, 3, stride, groups=cin, relu=False),
                                          conv_bn(cin, cout, 1, relu=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x)
        if self.downsample is not None:
            y = self.downsample(y)
        return self.project(y) + (x if self.shortcut is None else self.shortcut(x))
