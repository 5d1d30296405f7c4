"""AWQ (Lin et al. 2023, "AWQ: Activation-aware Weight Quantization for LLM Compression and
Acceleration"): before round-to-nearest, scale each input channel of a layer's weight by
``s = mean|x|^alpha`` of that channel's activations, so that the channels that carry large inputs
(the salient weights, section 3.1) lose less to rounding, and divide the inputs by ``s``.

``quantize_(model, AWQ(bits=4, group_size=128, calibration_data=batches))`` runs the model block by
block over the calibration batches (``netshrink.calibration.layerwise``, each block on the outputs
of the blocks already quantized, as the reference ``run_awq`` does) and, per Linear / Conv layer,
searches ``alpha`` on ``grid`` + 1 evenly spaced points of ``[0, 1]`` (section 3.2, Eq. 5: the
reference ``auto_scale`` normalises ``s`` by ``sqrt(max(s) min(s))``), keeping the one whose
quantized layer has the least output error on the calibration inputs. That error,
``||(W - Q(W diag(s)) diag(s)^-1) X||^2``, is read exactly from the inputs' Hessian ``X X^T``
(``calibration.hessian``), so no activation is held beyond one block's statistics. ``alpha = 0`` is
plain round-to-nearest on the same grid and is always a candidate: on the calibration inputs each
layer's error is at most round-to-nearest's.

The grid is min-max (or MSE-clipped) affine / symmetric per output channel or per group of
``group_size`` columns, as GPTQ's. The scales stay on the layer as an input scale
(``quant.input_scale``: the paper folds them into the previous operation, which only a pre-norm
model allows) and the scaled weight carries its grid as a fake-quant parametrization
(``uniform.FakeQuantize``), so ``fit`` can fine-tune on it and ``finalize_`` bakes it. Pruning
masks already on a layer are kept (a zero stays zero under scaling and on every grid).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils import parametrize

from netshrink.calibration.batches import BATCH_SIZE
from netshrink.calibration.hessian import LAYER_KINDS, LayerInputs
from netshrink.calibration.solve import refuse_other_parametrizations, row_groups, solve_layers, write_weight
from netshrink.core import record_checks
from netshrink.core.config import Config, unlogged
from netshrink.core.errors import ConfigError
from netshrink.core.registry import register
from netshrink.core.selection import LayerFilter
from netshrink.quant.calibration import Grid, calibrate
from netshrink.quant.gptq import check_calibrated_grid
from netshrink.quant.input_scale import INPUT_SCALE, channel_values, column_scales, install_input_scales
from netshrink.quant.layers import check_finite, stored_on_grids
from netshrink.quant.uniform import FakeQuantize, quantize_

MIN_SCALE = 1e-4  # the reference auto_scale's floor on mean|x|^alpha (a channel that never varied)


@dataclasses.dataclass(frozen=True)
class AWQ(Config):
    """Quantize Linear and Conv weights with activation-aware scales (see the module docstring).

    Args:
        bits: 2 to 8.
        group_size: columns per grid of each output channel (``weight.flatten(1)``'s columns; it
            must divide every chosen layer's); None: one grid per output channel.
        grid: the number of steps of ``alpha`` over ``[0, 1]`` (the paper's 20).
        alpha: a fixed ``alpha`` instead of the search (0: round-to-nearest on the same grids).
        scheme: ``"affine"`` (the paper's asymmetric grids) or ``"symmetric"``.
        calibration: how each grid's range is chosen: ``"minmax"`` or ``"mse"`` (``quant.calibration``).
        layers: names of the layers to quantize (default: every Linear / Conv ``filter_fn`` accepts).
        filter_fn: ``filter_fn(module, name) -> bool`` picking among the Linear and Conv layers. Not logged.
        calibration_data: model inputs without labels (as GPTQ's; ``calibration.batches``). Not logged.
        batch_size: samples per calibration batch when the data is one tensor / dict or a Dataset.

    Example:
        >>> quantize_(model, AWQ(bits=4, group_size=128, calibration_data=batches))
        >>> finalize_(model); save(model, "model.nsk")
    """

    LAYER_FIELDS = ("layers",)

    bits: int = 4
    group_size: int | None = None
    grid: int = 20
    alpha: float | None = None
    scheme: str = "affine"
    calibration: str = "minmax"
    layers: tuple[str, ...] | None = None
    batch_size: int = BATCH_SIZE
    filter_fn: LayerFilter | None = unlogged()
    calibration_data: object | None = unlogged()

    def __post_init__(self) -> None:
        check_calibrated_grid(self, ("grid", "batch_size"))
        if self.alpha is not None and (isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float))
                                       or not 0 <= self.alpha <= 1):
            raise ConfigError(f"alpha must be a number in [0, 1] or None (searched), got {self.alpha!r}")


def output_error(layer: nn.Module, change: torch.Tensor, inputs: LayerInputs) -> float:
    """``||change X||^2 / n`` over the calibration inputs ``X``, from their Hessian ``2 X X^T / n``:
    ``change`` is ``(rows, columns)``, one Hessian per input group (a grouped convolution's)."""
    return sum(float(((change[rows] @ inputs.hessian[g]) * change[rows]).sum()) / 2
               for g, rows in enumerate(row_groups(layer)))


def search_scales(layer: nn.Module, inputs: LayerInputs, config: AWQ) -> tuple[torch.Tensor, torch.Tensor, Grid, dict]:
    """``(s, Q, grid, details)``: the input-channel scales of least output error on the grid of
    ``alpha`` values, the scaled weight ``Q`` on ``grid`` (``weight.flatten(1) * s`` rounded), and
    the log details (the chosen ``alpha``, its error and round-to-nearest's)."""
    weight = layer.weight.detach().flatten(1).float()
    magnitude = channel_values(layer, inputs.abs_mean, "mean")

    def candidate(alpha: float) -> tuple[float, float, torch.Tensor, torch.Tensor, Grid]:
        scale = magnitude.pow(alpha).clamp_min(MIN_SCALE)
        scale = scale / (scale.max() * scale.min()).sqrt()
        columns = column_scales(layer, scale)
        grid = calibrate(weight * columns, config.bits, config.scheme, True, config.calibration,
                         group_size=config.group_size or 0)
        quantized = grid.fake_quantize(weight * columns)
        return output_error(layer, weight - quantized / columns, inputs), alpha, scale, quantized, grid

    rounded = candidate(0.0)
    alphas = [step / config.grid for step in range(1, config.grid + 1)] if config.alpha is None \
        else [config.alpha] if config.alpha != 0 else []
    best = rounded if config.alpha in (None, 0) else None
    for alpha in alphas:
        tried = candidate(alpha)
        if best is None or tried[0] < best[0] * (1 - 1e-6):  # a tie (a depthwise layer) keeps the smaller alpha
            best = tried
    error, alpha, scale, quantized, grid = best
    rounded = rounded[0]
    return scale, quantized, grid, {"alpha": alpha, "error": error, "rtn_error": rounded}


def check_input_scale_layer(name: str, module: nn.Module, what: str) -> None:
    """The checks AWQ and SmoothQuant share: finite weights, no grid or shared values on the weight
    yet, and no input scale already."""
    check_finite(module.weight, name)
    refuse_other_parametrizations(name, module, what)
    if hasattr(module, INPUT_SCALE):
        raise ConfigError(f"layer {name!r} already has an input scale (from AWQ or SmoothQuant); quantize the "
                          "original model instead")


def _check_layer(name: str, module: nn.Module, config: AWQ) -> None:
    check_input_scale_layer(name, module, "AWQ")
    columns = module.weight[0].numel()
    if config.group_size is not None and columns % config.group_size:
        raise ConfigError(f"group_size {config.group_size} does not divide the {columns} input columns of layer "
                          f"{name!r}; choose a divisor of it, or leave that layer out")


def _quantize_layer(name: str, module: nn.Module, inputs: LayerInputs, config: AWQ) -> tuple[dict, Callable]:
    """AWQ of one layer: the quantized layer's function is written into its weight right away (the
    blocks after it run on it); installing stores the scaled weight with its grid and input scale."""
    scale, quantized, grid, details = search_scales(module, inputs, config)
    write_weight(module, quantized / column_scales(module, scale))

    def install() -> None:
        write_weight(module, quantized)
        parametrize.register_parametrization(module, "weight", FakeQuantize(grid))
        install_input_scales(module, {"": scale})  # "": the layer itself

    return {"bits": config.bits, "group_size": config.group_size, **details}, install


def check_record(model: nn.Module, record: dict) -> None:
    """The logged layers are Linear / Conv layers of the model."""
    record_checks.layers(model, record.get("layers"), LAYER_KINDS)


def rebuild_input_scales(model: nn.Module, record: dict) -> None:
    """Put the input scales back on the logged layers (their values come with the file's state)."""
    install_input_scales(model, dict.fromkeys(record["layers"]))


@register(AWQ, "awq", rebuild=rebuild_input_scales, check=check_record, verb=quantize_, stored_as=stored_on_grids)
def _awq(model: nn.Module, config: AWQ) -> dict:
    return solve_layers(model, config, lambda name, module, inputs: _quantize_layer(name, module, inputs, config),
                        lambda name, module: _check_layer(name, module, config))
