"""A per-input-channel scale kept on a layer: the layer computes ``W' (x / s)`` where ``W' = W diag(s)``.

AWQ (Lin et al. 2023, section 3.2) and SmoothQuant (Xiao et al. 2023, section 4) both move a
per-input-channel factor ``s`` from a layer's inputs into its weight: the weight is multiplied by
``s`` column by column before it is quantized and the inputs are divided by ``s``, so the
full-precision layer computes the same function. The papers fold ``1 / s`` into the operation
before the layer (a LayerNorm's weight, the previous Linear's rows); here it is kept as an input
scale on the layer itself, which works for every Linear and Conv whatever precedes it (a post-norm
BERT's LayerNorm also feeds the residual, a GELU does not commute with a scale): a buffer
``input_scale`` (one value per input channel, saved with the model's state) and a forward pre-hook
that divides the layer's first input by it. Its cost is one float per input channel, next to the
``out_channels`` quantized weights of that channel. ``load`` puts the buffers and hooks back from
the log (``install_input_scales`` with ones, then the file's values fill them).
"""

from __future__ import annotations

import torch
from torch import nn

from netshrink.calibration.hessian import groups_of

INPUT_SCALE = "input_scale"


def input_channels(layer: nn.Module) -> int:
    """The number of input channels of a Linear or Conv layer."""
    return layer.in_features if isinstance(layer, nn.Linear) else layer.in_channels


def channel_values(layer: nn.Module, per_column: torch.Tensor, reduce: str) -> torch.Tensor:
    """``(input channels,)``: a statistic ``(groups, columns)`` of ``LayerInputs`` per input channel,
    ``reduce`` (``"mean"``, ``"amax"``, ``"amin"``) over a convolution's kernel positions."""
    groups = per_column.shape[0]
    per_channel = per_column.reshape(groups, input_channels(layer) // groups, -1)
    return getattr(per_channel, reduce)(dim=-1).reshape(-1)


def column_scales(layer: nn.Module, scale: torch.Tensor) -> torch.Tensor:
    """``scale`` (one value per input channel) laid over ``weight.flatten(1)``: ``(rows, columns)``,
    each column carrying its input channel's value (a grouped convolution's rows see their group's)."""
    weight = layer.weight
    groups = groups_of(layer)
    per_group = scale.reshape(groups, -1).repeat_interleave(weight[0].numel() // (scale.numel() // groups), dim=1)
    return per_group.repeat_interleave(weight.shape[0] // groups, dim=0)


def _divide(layer: nn.Module, args: tuple) -> tuple:
    x = args[0]
    scale = getattr(layer, INPUT_SCALE)
    shape = (-1,) if isinstance(layer, nn.Linear) else (-1, *[1] * (layer.weight.dim() - 2))  # channels, then space
    return (x / scale.reshape(shape).to(x.dtype), *args[1:])


def install_input_scales(model: nn.Module, scales: dict[str, torch.Tensor | None]) -> None:
    """Give each named layer an ``input_scale`` buffer (the value given, else ones to be filled by a
    file's state) and the pre-hook dividing its inputs by it."""
    for name, scale in scales.items():
        layer = model.get_submodule(name)
        if scale is None:
            scale = torch.ones(input_channels(layer), device=layer.weight.device)
        layer.register_buffer(INPUT_SCALE, scale.detach().float().clone())
        layer.register_forward_pre_hook(_divide)
