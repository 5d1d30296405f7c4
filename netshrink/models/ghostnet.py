"""``ghostnet_tiny``: a GhostNet student for 28x28 inputs (Han et al. 2020)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from netshrink.arch.blocks import GhostBottleneck, check_width, conv_bn, scaled
from netshrink.models.data_shape import image_shape
from netshrink.models.registry import register_model

#: three stride-2 bottlenecks; smaller inputs would be padding only
SMALLEST_INPUT = 4


class GhostNetTiny(nn.Module):
    """3x3 conv 16, then Ghost bottlenecks (in, hidden, out / stride) 16-32-24/2, 24-48-24,
    24-72-40/2, 40-120-40, 40-160-80/2, global average pool, classifier; ``width`` scales the
    channels (the paper's width multiplier, sec. 4.2). About 32k parameters at width 1."""

    def __init__(self, input_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10, width: float = 1.0) -> None:
        super().__init__()
        channels, _, _ = image_shape("ghostnet_tiny", input_shape, SMALLEST_INPUT)
        c = {n: scaled(n, check_width("ghostnet_tiny", width), 4) for n in (16, 24, 32, 40, 48, 72, 80, 120, 160)}
        self.features = nn.Sequential(
            conv_bn(channels, c[16]),
            GhostBottleneck(c[16], c[32], c[24], 2), GhostBottleneck(c[24], c[48], c[24]),
            GhostBottleneck(c[24], c[72], c[40], 2), GhostBottleneck(c[40], c[120], c[40]),
            GhostBottleneck(c[40], c[160], c[80], 2),
        )
        self.classifier = nn.Linear(c[80], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean(dim=(2, 3)))  # (B, classes)


@register_model
def ghostnet_tiny(input_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10, width: float = 1.0) -> nn.Module:
    return GhostNetTiny(tuple(input_shape), num_classes, width)
