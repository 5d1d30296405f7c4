"""GPTQ (Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained
Transformers"): weights rounded to an integer grid one input column at a time, each column's
rounding error spread over the columns not yet rounded so that the layer's outputs on calibration
inputs move as little as possible.

``quantize_(model, GPTQ(bits=4, group_size=128, calibration_data=batches))`` runs the model block by
block over the calibration batches (``netshrink.calibration.layerwise``, the paper's section 4 and
its reference ``*_sequential`` functions), accumulates each Linear / Conv layer's Hessian
``H = 2 X X^T`` (``calibration.hessian``; convolutions unfolded as the reference ``add_batch``
does), and runs Algorithm 1 (``calibration.obs.sweep``): dampening by ``damp`` times the mean
diagonal, the Cholesky factor of ``H^-1`` (section 3, step 3), lazy batch updates over blocks of
``block_size`` columns (step 2), and optionally the columns in order of decreasing ``diag(H)``
(``act_order``, the reference implementation's heuristic).

Grids are min-max (or MSE-clipped) per output channel, or per channel and group of ``group_size``
consecutive columns. Without ``act_order`` a group's grid is chosen when the sweep reaches its
first column, from the group's current (error-updated) weights, as in the reference code; with
``act_order`` the groups stay contiguous in the weight's own column order and their grids are
chosen from the weights before the sweep ("static groups", as AutoGPTQ's ``static_groups``), so a
stored group needs no column index. The quantized weights are written into the layer, which then
carries the grid as a fake-quant parametrization (``uniform.FakeQuantize``): ``fit`` can fine-tune
on the grid, and ``finalize_`` bakes it. Pruning masks already on a layer are kept (and the exact
zeros of a layer pruned and finalized before, as a recipe's stages leave it): a masked weight
is fixed to zero (exact on every grid), its error spread like a rounding error, so sparsity and
quantization chain.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils import parametrize

from netshrink.calibration.batches import BATCH_SIZE
from netshrink.calibration.hessian import LAYER_KINDS, LayerInputs, groups_of
from netshrink.calibration.obs import BLOCK_SIZE, inverse_hessian_factor, sweep
from netshrink.calibration.solve import refuse_other_parametrizations, solve_layers, solve_row_groups
from netshrink.core import record_checks
from netshrink.core.config import Config, unlogged
from netshrink.core.errors import ConfigError
from netshrink.core.registry import register
from netshrink.core.selection import LayerFilter, check_layer_names
from netshrink.prune.masks import current_mask
from netshrink.quant.calibration import SCHEMES, Grid, calibrate
from netshrink.quant.layers import check_bits, check_finite, stored_on_grids
from netshrink.quant.uniform import MAX_BITS, MIN_BITS, FakeQuantize, quantize_

GPTQ_CALIBRATIONS = ("minmax", "mse")


@dataclasses.dataclass(frozen=True)
class GPTQ(Config):
    """Quantize Linear and Conv weights with GPTQ on calibration data (see the module docstring).

    Args:
        bits: 2 to 8.
        group_size: columns per grid of each output channel (``weight.flatten(1)``'s columns; it
            must divide every chosen layer's); None: one grid per output channel.
        act_order: sweep the columns in order of decreasing ``diag(H)`` (inputs with more energy
            first).
        damp: fraction of the mean diagonal of ``H`` added to its diagonal (GPTQ's ``percdamp``).
        asymmetric: each layer reproduces the original model's outputs on the original's inputs,
            making up for the layers changed before it (GPTAQ, ``calibration.hessian.asymmetric_target``);
            False: its own outputs on the inputs it now gets, as GPTQ.
        block_size: columns per lazy batch update (rounded up to a multiple of ``group_size``).
        scheme: ``"affine"`` (the paper's asymmetric min-max grids) or ``"symmetric"``.
        calibration: how each grid's range is chosen: ``"minmax"`` or ``"mse"`` (``quant.calibration``).
        layers: names of the layers to quantize (default: every Linear / Conv ``filter_fn`` accepts).
        filter_fn: ``filter_fn(module, name) -> bool`` picking among the Linear and Conv layers. Not logged.
        calibration_data: model inputs without labels: a tensor or dict of tensors (cut into
            ``batch_size`` samples), a list of batches, a Dataset or a DataLoader
            (``calibration.batches``). Not logged.
        batch_size: samples per calibration batch when the data is one tensor / dict or a Dataset.

    Example:
        >>> quantize_(model, GPTQ(bits=4, group_size=128, act_order=True, calibration_data=batches))
        >>> finalize_(model); save(model, "model.nsk")
    """

    LAYER_FIELDS = ("layers",)

    bits: int = 4
    group_size: int | None = None
    act_order: bool = False
    damp: float = 0.01
    asymmetric: bool = False
    block_size: int = BLOCK_SIZE
    scheme: str = "affine"
    calibration: str = "minmax"
    layers: tuple[str, ...] | None = None
    batch_size: int = BATCH_SIZE
    filter_fn: LayerFilter | None = unlogged()
    calibration_data: object | None = unlogged()

    def __post_init__(self) -> None:
        check_calibrated_grid(self, ("block_size", "batch_size"))
        for field in ("act_order", "asymmetric"):
            if not isinstance(getattr(self, field), bool):
                raise ConfigError(f"{field} must be True or False, got {getattr(self, field)!r}")
        if isinstance(self.damp, bool) or not isinstance(self.damp, (int, float)) or not 0 <= self.damp <= 1:
            raise ConfigError(f"damp must be a number in [0, 1], got {self.damp!r} (0.01 adds 1% of the mean "
                              "diagonal)")


def check_calibrated_grid(config: Config, positive: tuple[str, ...]) -> None:
    """The options GPTQ and AWQ share: ``bits``, ``group_size`` (a positive integer or None), the
    ``positive`` integer fields, ``scheme``, ``calibration`` and ``layers``; each wrong one is one
    ``ConfigError`` line."""
    check_bits(config.bits, (), MIN_BITS, MAX_BITS)
    for field in ("group_size", *positive):
        value = getattr(config, field)
        if (value is not None or field != "group_size") and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"{field} must be a positive integer{' or None' * (field == 'group_size')}, "
                              f"got {value!r}")
    for field, value, allowed in (("scheme", config.scheme, SCHEMES),
                                  ("calibration", config.calibration, GPTQ_CALIBRATIONS)):
        if value not in allowed:
            raise ConfigError(f"unknown {field} {value!r}; choose one of {list(allowed)}")
    check_layer_names(config.layers)


class _GridTarget:
    """GPTQ's column target: the column rounded to its channel's (and group's) grid, zero where a
    pruning mask is. Columns arrive in sweep order; ``order[j]`` is column ``j``'s own position."""

    def __init__(self, weight: torch.Tensor, config: GPTQ, order: torch.Tensor, mask: torch.Tensor | None) -> None:
        rows, columns = weight.shape
        self.config, self.order, self.mask = config, order, mask
        self.group = config.group_size or columns
        groups = columns // self.group
        self.scale = torch.ones(rows, groups, device=weight.device)
        self.zero_point = torch.zeros(rows, groups, dtype=torch.int32, device=weight.device)
        self.qmin = self.qmax = 0
        self.lazy = config.group_size is not None and not config.act_order
        if not self.lazy:  # one grid per channel, or static groups: from the weights before the sweep
            for g in range(groups):
                self._choose(g, weight[:, g * self.group:(g + 1) * self.group])

    def _choose(self, g: int, values: torch.Tensor) -> None:
        grid = calibrate(values, self.config.bits, self.config.scheme, True, self.config.calibration)
        self.scale[:, g], self.zero_point[:, g] = grid.scale, grid.zero_point
        self.qmin, self.qmax = grid.qmin, grid.qmax

    def column(self, j: int, block: torch.Tensor, offset: int) -> torch.Tensor:
        own = int(self.order[j])
        g = own // self.group
        if self.lazy and own % self.group == 0:  # the group's columns are block[:, offset:offset + group]
            self._choose(g, block[:, offset:offset + self.group])
        fixed = torch.fake_quantize_per_channel_affine(block[:, offset:offset + 1], self.scale[:, g],
                                                       self.zero_point[:, g], 0, self.qmin, self.qmax)[:, 0]
        return fixed if self.mask is None else fixed * self.mask[:, own]

    def grid(self) -> Grid:
        group = self.config.group_size or 0
        scale, zero_point = (self.scale, self.zero_point) if group else (self.scale[:, 0], self.zero_point[:, 0])
        return Grid(scale, zero_point, self.qmin, self.qmax, group)


def gptq_weight(weight: torch.Tensor, hessian: torch.Tensor, config: GPTQ, mask: torch.Tensor | None = None,
                layer: str = "") -> tuple[torch.Tensor, Grid, float]:
    """``(Q, grid, loss)``: GPTQ of ``weight`` ``(rows, columns)`` given its inputs' ``hessian``
    ``(columns, columns)``; ``Q`` lies on ``grid`` (zero where ``mask`` is), ``loss`` is the
    estimated output error ``sum (w - q)^2 / (2 [U]_jj^2)`` (the reference code's ``Losses``)."""
    weight = weight.float().clone()
    dead = torch.diagonal(hessian) == 0
    weight[:, dead] = 0  # inputs that never varied: their weights cannot matter on this data
    order = torch.argsort(torch.diagonal(hessian), descending=True, stable=True) if config.act_order \
        else torch.arange(weight.shape[1], device=weight.device)
    factor, _ = inverse_hessian_factor(hessian[order][:, order], config.damp, layer)
    target = _GridTarget(weight, config, order, mask)
    block = math.ceil(config.block_size / target.group) * target.group if config.group_size else config.block_size
    swept, losses = sweep(weight[:, order], factor, target, block)
    grid = target.grid()
    quantized = grid.fake_quantize(swept[:, torch.argsort(order)])  # on the grid by the grid's own op
    return quantized, grid, float(losses.sum())


def _check_layer(name: str, module: nn.Module, config: GPTQ) -> None:
    check_finite(module.weight, name)
    refuse_other_parametrizations(name, module, "GPTQ")
    columns = module.weight[0].numel() // groups_of(module)
    if config.group_size is not None and columns % config.group_size:
        raise ConfigError(f"group_size {config.group_size} does not divide the {columns} input columns of layer "
                          f"{name!r}; choose a divisor of it, or leave that layer out")


def _quantize_layer(name: str, module: nn.Module, inputs: LayerInputs, config: GPTQ) -> tuple[dict, Callable]:
    """GPTQ of one layer (each group of a grouped convolution on its own Hessian), written into the
    layer's stored weight; installing puts the grid on as a parametrization."""
    mask = current_mask(module, "weight")
    if mask is None and bool((module.weight == 0).any()):  # pruned then finalized: its zeros stay zeros
        mask = (module.weight != 0).to(module.weight.dtype)
    grids, loss = solve_row_groups(module, inputs, mask,
                                   lambda rows, hessian, prior: gptq_weight(rows, hessian, config, prior, name),
                                   config.damp)
    grid = Grid(torch.cat([g.scale for g in grids]), torch.cat([g.zero_point for g in grids]),
                grids[0].qmin, grids[0].qmax, grids[0].group_size)
    return ({"bits": config.bits, "group_size": config.group_size, "loss": loss},
            lambda: parametrize.register_parametrization(module, "weight", FakeQuantize(grid)))


def _check(model: nn.Module, record: dict) -> None:
    record_checks.layers(model, record.get("layers"), LAYER_KINDS)


@register(GPTQ, "gptq", rebuild=None, check=_check, verb=quantize_, stored_as=stored_on_grids)
def _gptq(model: nn.Module, config: GPTQ) -> dict:
    return solve_layers(model, config, lambda name, module, inputs: _quantize_layer(name, module, inputs, config),
                        lambda name, module: _check_layer(name, module, config), reference=config.asymmetric)
