"""Multiply-accumulates counted by torch's own ``torch.utils.flop_counter`` (dense MACs = FLOPs/2)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def _device_of(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


@torch.no_grad()
def count_macs_per_module(model: nn.Module, input_shape: Sequence[int]) -> dict[str, int]:
    """Dense MACs for one sample, per module qualified name (``""`` is the whole model)."""
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    try:
        with counter:
            model(torch.zeros(1, *input_shape, device=_device_of(model)))
    finally:
        model.train(was_training)
    prefix = type(model).__name__
    per_module: dict[str, int] = {}
    for name, ops in counter.get_flop_counts().items():
        if name == prefix:  # the root module repeats "Global"
            continue
        if name == "Global":
            key = ""
        elif name.startswith(prefix + "."):
            key = name[len(prefix) + 1:]
        else:
            key = name
        per_module[key] = sum(ops.values()) // 2
    return per_module


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Dense MACs of one forward pass on one sample of ``input_shape`` (C, H, W)."""
    return count_macs_per_module(model, input_shape).get("", 0)
