"""Fitting zoo models to a data set's input shape: build one for given inputs, refuse inputs too small.

Every zoo model must either run on every built-in data set (Fashion-MNIST 1x28x28, digits 1x8x8)
or refuse at build time with one line naming the smallest input it accepts, never fail later with
a shape error from inside torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torch import nn

from netshrink.core.errors import ConfigError
from netshrink.models.registry import create, model_arguments


def image_shape(model: str, input_shape: Any, smallest: int, fix: str = "") -> tuple[int, int, int]:
    """``input_shape`` as ``(channels, height, width)``; a one-line ConfigError when it is not one, or
    when height or width is below ``smallest`` (``fix`` says what else to try)."""
    try:
        channels, height, width = (int(v) for v in input_shape)
    except (TypeError, ValueError):
        raise ConfigError(f"{model} takes input_shape as (channels, height, width), got {input_shape!r}") from None
    if min(channels, height, width) < 1:
        raise ConfigError(f"{model} takes a positive input_shape (channels, height, width), got {list(input_shape)}")
    if min(height, width) < smallest:
        raise ConfigError(f"{model} needs inputs of at least {smallest}x{smallest}, got {height}x{width}{fix}")
    return channels, height, width


def create_for_data(name: str, input_shape: Sequence[int], num_classes: int, **kwargs: Any) -> nn.Module:
    """Build zoo model ``name`` for inputs of ``input_shape`` (C, H, W) and ``num_classes`` classes.

    A convolutional builder gets ``input_shape``, a fully connected one ``in_features`` (the
    flattened size); ``kwargs`` given explicitly win. A model that cannot take the input says so in
    one line (``ConfigError``).
    """
    arguments = model_arguments(name)
    sized: dict[str, Any] = {"num_classes": num_classes} if "num_classes" in arguments else {}
    if "input_shape" in arguments:
        sized["input_shape"] = [int(v) for v in input_shape]
    elif "in_features" in arguments:
        sized["in_features"] = math.prod(int(v) for v in input_shape)
    return create(name, **{**sized, **kwargs})
