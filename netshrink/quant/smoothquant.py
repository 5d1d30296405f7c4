"""SmoothQuant (Xiao et al. 2023, "SmoothQuant: Accurate and Efficient Post-Training Quantization
for Large Language Models"): int8 weights *and* activations, with the activations' outlier channels
smoothed into the weights first.

A few input channels of a transformer's layers carry values far larger than the rest, so one
per-tensor activation grid wastes its levels on them (section 3). Dividing each input channel ``j``
by ``s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)`` (section 4, Eq. 4; ``alpha`` the migration
strength, 0.5 by default) and multiplying the weight's column ``j`` by it leaves the layer's
function unchanged in full precision and moves the difficulty from the activations to the weights,
which per-channel grids take well.

``quantize_(model, SmoothQuant(alpha=0.5, calibration_data=batches))`` runs the model block by block
over the calibration batches (``netshrink.calibration.layerwise``), reads each Linear / Conv
layer's per-channel input range (``calibration.hessian.LayerInputs``), smooths the layer, rounds
the scaled weight to a per-output-channel grid of ``bits`` bits and calibrates one static min-max
grid of ``activation_bits`` bits per layer input on the smoothed range (the paper's static,
per-tensor "O3" setting; without smoothing this is ``Quantize(granularity="channel",
activation_bits=8)``). The scales stay on the layer as an input scale (``quant.input_scale``; the
paper folds them into the preceding LayerNorm or Linear), the activation grids are forward
pre-hooks after it (``quant.activations``), both put back by ``load`` from the log.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils import parametrize

from netshrink.calibration.batches import BATCH_SIZE
from netshrink.calibration.hessian import LayerInputs, groups_of
from netshrink.calibration.solve import solve_layers, write_weight
from netshrink.core.config import Config, unlogged
from netshrink.core.errors import ConfigError
from netshrink.core.registry import register
from netshrink.core.selection import LayerFilter, check_layer_names
from netshrink.quant.activations import grid_record, install_activation_grids
from netshrink.quant.awq import check_input_scale_layer, check_record, rebuild_input_scales
from netshrink.quant.calibration import SCHEMES, Grid, calibrate, grid_for_range
from netshrink.quant.input_scale import channel_values, column_scales, install_input_scales
from netshrink.quant.layers import check_bits, stored_on_grids
from netshrink.quant.uniform import MAX_BITS, MIN_BITS, FakeQuantize, quantize_
from netshrink.quant.uniform import _check as check_activation_grids

MIN_RANGE = 1e-5  # the reference smooth_lm's floor on a channel's maximum (a channel that never varied)


@dataclasses.dataclass(frozen=True)
class SmoothQuant(Config):
    """Quantize Linear and Conv weights and their inputs, smoothing activation outliers into the
    weights (see the module docstring).

    Args:
        alpha: the migration strength in [0, 1] (0: no smoothing; the paper's 0.5, up to 0.75-0.85
            for models with strong outliers).
        bits: weight bits, 2 to 8 (per output channel).
        activation_bits: input bits, 2 to 8 (one static grid per layer input).
        scheme: ``"symmetric"`` (the paper's) or ``"affine"``, for weights and activations.
        layers: names of the layers to quantize (default: every Linear / Conv ``filter_fn`` accepts).
        filter_fn: ``filter_fn(module, name) -> bool`` picking among the Linear and Conv layers. Not logged.
        calibration_data: model inputs without labels (as GPTQ's; ``calibration.batches``). Not logged.
        batch_size: samples per calibration batch when the data is one tensor / dict or a Dataset.

    Example:
        >>> quantize_(model, SmoothQuant(alpha=0.5, calibration_data=batches)); finalize_(model)
    """

    LAYER_FIELDS = ("layers",)

    alpha: float = 0.5
    bits: int = 8
    activation_bits: int = 8
    scheme: str = "symmetric"
    layers: tuple[str, ...] | None = None
    batch_size: int = BATCH_SIZE
    filter_fn: LayerFilter | None = unlogged()
    calibration_data: object | None = unlogged()

    def __post_init__(self) -> None:
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not 0 <= self.alpha <= 1:
            raise ConfigError(f"alpha must be a number in [0, 1], got {self.alpha!r} (0.5 splits the difficulty "
                              "evenly between weights and activations)")
        check_bits(self.bits, (), MIN_BITS, MAX_BITS)
        check_bits(self.activation_bits, (), MIN_BITS, MAX_BITS, "activation_bits")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if self.scheme not in SCHEMES:
            raise ConfigError(f"unknown scheme {self.scheme!r}; choose one of {list(SCHEMES)}")
        check_layer_names(self.layers)


def smoothing_scales(layer: nn.Module, inputs: LayerInputs, alpha: float) -> torch.Tensor:
    """``s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)`` per input channel (section 4, Eq. 4)."""
    low, high = channel_values(layer, inputs.low, "amin"), channel_values(layer, inputs.high, "amax")
    activation = torch.maximum(low.abs(), high.abs()).clamp_min(MIN_RANGE)
    weight = layer.weight.detach().float().abs()
    groups = groups_of(layer)  # a grouped convolution's rows see their group's channels only
    weight = weight.reshape(groups, weight.shape[0] // groups, weight.shape[1], -1).amax(dim=(1, 3)).reshape(-1)
    return (activation.pow(alpha) / weight.clamp_min(MIN_RANGE).pow(1 - alpha)).clamp_min(MIN_RANGE)


def activation_grid(layer: nn.Module, inputs: LayerInputs, scale: torch.Tensor, bits: int, scheme: str) -> Grid:
    """The per-tensor min-max grid of the smoothed inputs ``x / s`` (from each channel's range)."""
    low = (channel_values(layer, inputs.low, "amin") / scale).min()
    high = (channel_values(layer, inputs.high, "amax") / scale).max()
    grid = grid_for_range(low.reshape(1), high.reshape(1), bits, scheme)
    return Grid(grid.scale[0], grid.zero_point[0], grid.qmin, grid.qmax)


def _quantize_layer(name: str, module: nn.Module, inputs: LayerInputs, config: SmoothQuant,
                    model: nn.Module) -> tuple[dict, Callable]:
    """Smooth and quantize one layer: its full-precision function is kept while the blocks after it
    are calibrated; installing stores the scaled weight with its grid, input scale and input grid."""
    scale = smoothing_scales(module, inputs, config.alpha)
    columns = column_scales(module, scale)
    weight = module.weight.detach().flatten(1).float() * columns
    grid = calibrate(weight, config.bits, config.scheme, True, "minmax")
    quantized = grid.fake_quantize(weight)
    write_weight(module, quantized / columns)
    record = grid_record(activation_grid(module, inputs, scale, config.activation_bits, config.scheme))

    def install() -> None:
        write_weight(module, quantized)
        parametrize.register_parametrization(module, "weight", FakeQuantize(grid))
        install_input_scales(module, {"": scale})  # "": the layer itself; before its input grid
        install_activation_grids(model, {name: record})

    return {"bits": config.bits, "activation_bits": config.activation_bits, "activation_grid": record}, install


def _check(model: nn.Module, record: dict) -> None:
    check_record(model, record)
    check_activation_grids(model, {"layers": record.get("layers"), "activation_grids": {
        name: details.get("activation_grid") if isinstance(details, dict) else details
        for name, details in (record.get("layers") or {}).items()}})


def _rebuild(model: nn.Module, record: dict) -> None:
    rebuild_input_scales(model, record)
    install_activation_grids(model, {name: details["activation_grid"] for name, details in record["layers"].items()})


@register(SmoothQuant, "smoothquant", rebuild=_rebuild, check=_check, verb=quantize_,
          stored_as=stored_on_grids)
def _smoothquant(model: nn.Module, config: SmoothQuant) -> dict:
    return solve_layers(model, config,
                        lambda name, module, inputs: _quantize_layer(name, module, inputs, config, model),
                        lambda name, module: check_input_scale_layer(name, module, "SmoothQuant"), diagonal=True)
