"""``mobilenet_tiny``: a MobileNet v1 student for 28x28 inputs (Howard et al. 2017)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from netshrink.arch.blocks import DepthwiseSeparable, check_width, conv_bn, scaled
from netshrink.models.data_shape import image_shape
from netshrink.models.registry import register_model

#: three stride-2 blocks; smaller inputs would be padding only
SMALLEST_INPUT = 4


class MobileNetTiny(nn.Module):
    """3x3 conv 16, depthwise separable blocks 32/2, 64/2, 64, 128/2 (channels/stride), global
    average pool, classifier; ``width`` scales every layer's channels (the paper's width multiplier
    alpha, sec. 3.3). About 19k parameters at width 1."""

    def __init__(self, input_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10, width: float = 1.0) -> None:
        super().__init__()
        channels, _, _ = image_shape("mobilenet_tiny", input_shape, SMALLEST_INPUT)
        c16, c32, c64, c128 = (scaled(c, check_width("mobilenet_tiny", width), 8) for c in (16, 32, 64, 128))
        self.features = nn.Sequential(
            conv_bn(channels, c16), DepthwiseSeparable(c16, c32, 2), DepthwiseSeparable(c32, c64, 2),
            DepthwiseSeparable(c64, c64), DepthwiseSeparable(c64, c128, 2),
        )
        self.classifier = nn.Linear(c128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean(dim=(2, 3)))  # (B, classes)


@register_model
def mobilenet_tiny(input_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10, width: float = 1.0) -> nn.Module:
    return MobileNetTiny(tuple(input_shape), num_classes, width)
