"""Quantized layer inputs (activations): forward pre-hooks that ``load`` reinstalls from the log.

Weights carry their quantization in their values, but an activation grid is a runtime operation,
so it lives in a forward pre-hook on the layer whose input it quantizes, and its few numbers
(scale, zero point, range) go into the transform log record; the technique's rebuilder puts the
hooks back on a freshly built model. The grid of each layer's input is calibrated on a few batches
of real inputs (``calibration_data``; validation data, never test) by the same methods as weights
(``netshrink.quant.calibration``): min-max, percentile or MSE-optimal clipping, one scale per
tensor. Only Linear and Conv inputs are quantized (an Embedding's input is token ids).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from netshrink.calibration.batches import calibration_batches, run_calibration
from netshrink.core.modules import get_module
from netshrink.quant.calibration import Grid, calibrate

ACTIVATION_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
CALIBRATION_BATCH = 256


def _transform_first_input(transform: Callable[[torch.Tensor], torch.Tensor], module: nn.Module,
                           args: tuple) -> tuple:
    return (transform(args[0]), *args[1:])


def install_input_transforms(model: nn.Module, transforms: dict[str, Callable[[torch.Tensor], torch.Tensor]]) -> None:
    """Apply ``transforms[layer]`` to the first input of each named layer, on every forward pass."""
    for name, transform in transforms.items():
        get_module(model, name).register_forward_pre_hook(functools.partial(_transform_first_input, transform))


def grid_record(grid: Grid) -> dict:
    """A per-tensor grid as plain numbers for the log."""
    return {"scale": float(grid.scale), "zero_point": int(grid.zero_point), "qmin": grid.qmin, "qmax": grid.qmax}


def grid_from_record(record: dict) -> Grid:
    return Grid(torch.tensor(record["scale"], dtype=torch.float32),
                torch.tensor(record["zero_point"], dtype=torch.int32), int(record["qmin"]), int(record["qmax"]))


def install_activation_grids(model: nn.Module, grids: dict[str, dict]) -> None:
    """Fake-quantize the inputs of the layers in ``grids`` (``{layer: grid_record}``)."""
    install_input_transforms(model, {name: grid_from_record(g).fake_quantize for name, g in grids.items()})


def layer_inputs(model: nn.Module, layers: list[str], data: Any) -> dict[str, torch.Tensor]:
    """Every input the named layers see while the model runs (eval mode, no gradients) on ``data``
    (a batch of inputs, a dict of them, a list of batches, a Dataset: ``calibration.batches``)."""
    batches = calibration_batches(data, CALIBRATION_BATCH)
    seen: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    handles = [get_module(model, name).register_forward_pre_hook(
        lambda m, args, name=name: seen[name].append(args[0].detach().flatten())) for name in layers]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()
            for index, batch in enumerate(batches):
                run_calibration(model, batch, index)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return {name: torch.cat(values) for name, values in seen.items() if values}


def calibrate_activations(model: nn.Module, layers: list[str], data: torch.Tensor, bits: int, scheme: str,
                          method: str, percentile: float) -> dict[str, dict]:
    """``{layer: grid_record}`` for the inputs of the Linear / Conv layers among ``layers``."""
    chosen = [name for name in layers if isinstance(get_module(model, name), ACTIVATION_LAYERS)]
    inputs = layer_inputs(model, chosen, data)
    return {name: grid_record(calibrate(values.reshape(1, -1), bits, scheme, False, method, percentile))
            for name, values in inputs.items()}
