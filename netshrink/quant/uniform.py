"""Uniform quantization of weights: int2..int8 grids, fp16 and bf16; post-training or trained.

``quantize_`` puts a fake-quant parametrization on every chosen weight: the forward pass sees the
quantized values, the backward pass the straight-through estimator (Bengio et al. 2013; gradient 1
inside the clipping range, 0 outside, as in Jacob et al. 2018, section 3). Post-training
quantization is ``quantize_`` then ``finalize_``; quantization-aware training is ``quantize_``,
then ``fit()`` (or any loop: the trainable tensor is the full-precision original), then
``finalize_``. The grid (``netshrink.quant.calibration``) is calibrated on the weights when
``quantize_`` runs and stays fixed during training, so the saved integers are the ones trained.
With ``activation_bits`` the inputs of the quantized Linear / Conv layers are fake-quantized too,
their grids calibrated on ``calibration_data`` (``netshrink.quant.activations``).
After ``finalize_`` a per-tensor b-bit layer holds at most ``2**b`` values on one affine grid,
which ``save`` stores as b-bit integers before entropy coding; per-channel and per-group layers
are stored as b-bit integers plus a float16 scale and a zero point per channel or group
(``codec.encodings.group_int``); fp16 / bf16 values keep their float32
dtype but have only 16 significant bits, which the codec's byte planes store in about half.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn
from torch.nn.utils import parametrize

from netshrink.core import record_checks
from netshrink.core.config import Config, unlogged
from netshrink.core.errors import ConfigError, NetshrinkFormatError
from netshrink.core.registry import apply_as, register
from netshrink.core.selection import LayerFilter
from netshrink.quant.activations import calibrate_activations, install_activation_grids
from netshrink.quant.calibration import CALIBRATIONS, SCHEMES, Grid, calibrate
from netshrink.quant.layers import check_bits, check_bits_setting, stored_on_grids, targets

FLOAT_FORMATS = {"fp16": torch.float16, "bf16": torch.bfloat16}
MIN_BITS, MAX_BITS = 2, 8
GRANULARITIES = ("tensor", "channel", "group")


@dataclasses.dataclass(frozen=True)
class Quantize(Config):
    """Quantize weights to a uniform integer grid or a 16-bit float format.

    Args:
        bits: 2 to 8, ``"fp16"`` or ``"bf16"``; or ``{layer name: bits}`` for mixed precision by hand.
        scheme: ``"symmetric"`` (zero point 0) or ``"affine"`` (zero point chosen so the range fits).
        granularity: ``"tensor"`` (one scale per tensor), ``"channel"`` (one scale per output channel /
            embedding row: less error) or ``"group"`` (one per ``group_size`` consecutive weights of
            each channel / row, as GPTQ's groups). ``save`` stores every one as b-bit integers.
        group_size: weights per grid of ``granularity="group"``; it must divide each chosen layer's
            ``weight[0].numel()`` (input features, embedding width).
        calibration: how the clipping range is chosen: ``"minmax"``, ``"percentile"`` or ``"mse"``.
        percentile: the percentile kept by ``calibration="percentile"`` (in (50, 100]).
        activation_bits: also quantize the inputs of the chosen Linear and Conv layers to this many
            bits (one grid per tensor, ``scheme`` and ``calibration`` as for weights); None: weights only.
        calibration_data: a few validation batches of model inputs, run once to calibrate the
            activation grids (needed with ``activation_bits``). Not logged; the log holds the grids.
        filter_fn: ``filter_fn(module, name) -> bool`` picking among the Linear, Conv, Embedding and
            attention in-projection layers (default: all of them). Not logged; the log lists the
            layers quantized.

    Example:
        >>> quantize_(model, Quantize(bits=4, granularity="channel", calibration="mse")); finalize_(model)
        >>> quantize_(model, Quantize(bits={"features.0": 8, "classifier.0": 5}))  # mixed precision
        >>> quantize_(model, Quantize(bits=4, granularity="group", group_size=128))  # embeddings too
    """

    LAYER_FIELDS = ("bits",)

    bits: int | str | dict[str, int | str] = 8
    scheme: str = "symmetric"
    granularity: str = "tensor"
    group_size: int = 128
    calibration: str = "minmax"
    percentile: float = 99.99
    activation_bits: int | None = None
    filter_fn: LayerFilter | None = unlogged()
    calibration_data: torch.Tensor | None = unlogged()

    def __post_init__(self) -> None:
        check_bits_setting(self.bits, tuple(FLOAT_FORMATS), MIN_BITS, MAX_BITS)
        if self.activation_bits is not None:
            check_bits(self.activation_bits, (), MIN_BITS, MAX_BITS, "activation_bits")
        for field, value, allowed in (("scheme", self.scheme, SCHEMES), ("granularity", self.granularity,
                                      GRANULARITIES), ("calibration", self.calibration, CALIBRATIONS)):
            if value not in allowed:
                raise ConfigError(f"unknown {field} {value!r}; choose one of {list(allowed)}")
        if isinstance(self.group_size, bool) or not isinstance(self.group_size, int) or self.group_size < 1:
            raise ConfigError(f"group_size must be a positive integer, got {self.group_size!r}")
        if isinstance(self.percentile, bool) or not isinstance(self.percentile, (int, float)) \
                or not 50 < self.percentile <= 100:
            raise ConfigError(f"percentile must be in (50, 100], got {self.percentile!r} (99.99 keeps all but "
                              "the extreme 0.01% on each side)")


class FakeQuantize(nn.Module):
    """The parametrization ``w -> scale * (q(w) - zero_point)`` with a straight-through gradient;
    scale and zero point are buffers, so checkpoints of a QAT run keep them."""

    def __init__(self, grid: Grid) -> None:
        super().__init__()
        self.qmin, self.qmax, self.group_size = grid.qmin, grid.qmax, grid.group_size
        self.register_buffer("scale", grid.scale)
        self.register_buffer("zero_point", grid.zero_point)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return Grid(self.scale, self.zero_point, self.qmin, self.qmax, self.group_size).fake_quantize(weight)


class FakeFloat(nn.Module):
    """The parametrization ``w -> w`` rounded to fp16 / bf16 (dtype kept), straight-through."""

    def __init__(self, fmt: str) -> None:
        super().__init__()
        self.fmt = fmt

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        rounded = weight.to(FLOAT_FORMATS[self.fmt]).to(weight.dtype)
        return weight + (rounded - weight).detach()


def quantizer(weight: torch.Tensor, bits: int | str, config: Quantize, layer: str) -> tuple[nn.Module, dict]:
    """The fake-quant parametrization for ``weight`` and its log details."""
    if isinstance(bits, str):
        if FLOAT_FORMATS[bits] == torch.float16 and float(weight.abs().max()) > torch.finfo(torch.float16).max:
            raise ConfigError(f"layer {layer!r} has weights beyond fp16's range (65504); use bf16 or int bits")
        return FakeFloat(bits), {"bits": bits}
    group = config.group_size if config.granularity == "group" else 0
    if group and weight[0].numel() % group:
        raise ConfigError(f"group_size {group} does not divide the {weight[0].numel()} columns of layer {layer!r}; "
                          "choose a divisor of it, or leave that layer out (filter_fn)")
    grid = calibrate(weight, bits, config.scheme, config.granularity != "tensor", config.calibration,
                     config.percentile, group_size=group)
    error = float((grid.fake_quantize(weight) - weight).pow(2).mean())
    return FakeQuantize(grid), {"bits": bits, "mse": error}


def _rebuild(model: nn.Module, record: dict) -> None:
    install_activation_grids(model, record.get("activation_grids", {}))


def quantize_(model: nn.Module, config: Config) -> nn.Module:
    """Quantize ``model``'s weights in place with a quantization config (``Quantize``; ``GPTQ`` on
    calibration data); logged. Returns the model."""
    return apply_as(quantize_, model, config, "quantization")


def _check(model: nn.Module, record: dict) -> None:
    record_checks.layers(model, record.get("layers"))
    grids = record_checks.mapping(record.get("activation_grids", {}), "activation_grids")
    record_checks.layers(model, grids)
    for name, grid in grids.items():
        grid = record_checks.mapping(grid, f"activation grid of {name[:80]!r}")
        scale, zero_point, qmin, qmax = (grid.get(k) for k in ("scale", "zero_point", "qmin", "qmax"))
        if not (isinstance(scale, float) and math.isfinite(scale) and scale > 0):
            raise NetshrinkFormatError(f"activation grid of {name[:80]!r}: scale must be a positive number")
        for value, what in ((qmin, "qmin"), (qmax, "qmax"), (zero_point, "zero_point")):
            if not isinstance(value, int) or isinstance(value, bool) or not -2 ** 15 <= value < 2 ** 15:
                raise NetshrinkFormatError(f"activation grid of {name[:80]!r}: {what} must be a 16-bit integer")
        if qmin >= qmax:
            raise NetshrinkFormatError(f"activation grid of {name[:80]!r}: qmin must be below qmax")


def _stored_as(model: nn.Module, record: dict) -> dict[str, str]:
    """Per-channel and per-group grids are stored as integers per group (``group_int``); a
    per-tensor grid is found by the cheap detection of the ``int`` encoding."""
    return {} if record["config"].get("granularity") == "tensor" else stored_on_grids(model, record)


@register(Quantize, "quantize", rebuild=_rebuild, check=_check, verb=quantize_, stored_as=_stored_as)
def _quantize(model: nn.Module, config: Quantize) -> dict:
    # checked here, not in the config: a config read back from a log never has its unlogged data
    if config.activation_bits is not None and config.calibration_data is None:
        raise ConfigError("activation_bits needs calibration_data: a few validation batches of inputs "
                          "(e.g. data.val.x[:512])")
    layers, fakes = {}, []
    for name, module, tensor_name, bits in targets(model, config.bits, config.filter_fn):
        weight = getattr(module, tensor_name).detach()
        fake, layers[name] = quantizer(weight, bits, config, name or type(model).__name__)
        fakes.append((module, tensor_name, fake))
    grids = {} if config.activation_bits is None else calibrate_activations(
        model, list(layers), config.calibration_data, config.activation_bits, config.scheme, config.calibration,
        config.percentile)
    for module, tensor_name, fake in fakes:  # every layer checked before any is changed
        parametrize.register_parametrization(module, tensor_name, fake)
    install_activation_grids(model, grids)
    return {"layers": layers, "activation_grids": grids}
