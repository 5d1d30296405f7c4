"""``shufflenet_tiny``: a ShuffleNet student for 28x28 inputs (Zhang et al. 2018)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from netshrink.arch.blocks import ShuffleUnit, check_width, conv_bn, scaled
from netshrink.models.data_shape import image_shape
from netshrink.models.registry import register_model

#: three stride-2 units; smaller inputs would be padding only
SMALLEST_INPUT = 4
GROUPS = 3


class ShuffleNetTiny(nn.Module):
    """3x3 conv 24, then ShuffleNet units (groups 3) 48/2, 48, 96/2, 96, 192/2 (channels/stride),
    global average pool, classifier; ``width`` scales the channels (the paper's "ShuffleNet s x",
    sec. 4.1.1). About 10k parameters at width 1."""

    def __init__(self, input_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10, width: float = 1.0) -> None:
        super().__init__()
        channels, _, _ = image_shape("shufflenet_tiny", input_shape, SMALLEST_INPUT)
        c24, c48, c96, c192 = (scaled(c, check_width("shufflenet_tiny", width), GROUPS) for c in (24, 48, 96, 192))
        self.features = nn.Sequential(
            conv_bn(channels, c24), ShuffleUnit(c24, c48, 2, GROUPS), ShuffleUnit(c48, c48, 1, GROUPS),
            ShuffleUnit(c48, c96, 2, GROUPS), ShuffleUnit(c96, c96, 1, GROUPS), ShuffleUnit(c96, c192, 2, GROUPS),
        )
        self.classifier = nn.Linear(c192, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean(dim=(2, 3)))  # (B, classes)


@register_model
def shufflenet_tiny(input_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10, width: float = 1.0) -> nn.Module:
    return ShuffleNetTiny(tuple(input_shape), num_classes, width)
