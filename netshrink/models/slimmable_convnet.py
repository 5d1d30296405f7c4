"""The zoo convnet as a slimmable network (Yu et al. 2019): one set of weights, four widths."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from netshrink.models.convnet import ConvNet
from netshrink.models.registry import register_model


@register_model
def slimmable_convnet(input_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10,
                      widths: Sequence[int] = (32, 32, 64, 64, 128), hidden: int = 256, dropout: float = 0.3,
                      width_mults: Sequence[float] = (0.25, 0.5, 0.75, 1.0)) -> nn.Module:
    """``convnet`` (same layers and inputs, 8x8 and up) whose Conv2d/Linear layers run at any of
    ``width_mults`` of their channels, with a BatchNorm per width; switch with
    ``netshrink.dynamic.set_width``. Train with ``netshrink.dynamic.sandwich_loss``."""
    from netshrink.dynamic.slimmable import make_slimmable

    return make_slimmable(ConvNet(tuple(input_shape), num_classes, tuple(widths), hidden, dropout), width_mults)
