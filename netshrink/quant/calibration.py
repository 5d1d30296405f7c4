"""Clipping ranges and integer grids for uniform quantization.

A b-bit grid is ``value = scale * (q - zero_point)`` with integer ``q`` in ``[qmin, qmax]`` (Jacob
et al. 2018, section 2.1). ``symmetric``: ``zero_point = 0`` and ``q`` in ``[-(2**(b-1)-1),
2**(b-1)-1]`` (zero exact, no offset term in integer kernels); ``affine``: ``q`` in ``[0, 2**b-1]``
with the range stretched to hold zero exactly. The range is calibrated per tensor or per output
channel (dim 0) by one of the methods below; GPTQ also makes grids per group of ``group_size``
consecutive columns of each output channel (``weight.flatten(1)``'s columns), one scale and zero
point per (channel, group), as GPTQ's reference implementation does (``calibrate``'s
``group_size`` too). Per-channel and per-group scales are rounded up to float16 numbers (where
float16 holds them: about 6e-5 to 65504), so ``save`` stores each in 2 bytes beside the integers
(``codec.encodings.group_int``); the grid moves by at most 1/1024 of a step. A range is chosen by:

- ``minmax``: the whole range of the values;
- ``percentile``: the ``p``-th percentile of the values, so rare outliers do not stretch the grid;
- ``mse``: the clipping of least squared quantization error among 64 fractions of the min-max
  range (MSE-optimal clipping, Banner et al. 2019 "Post-training 4-bit quantization", section 3;
  a grid search where the paper solves its Laplace-prior equation, so any distribution is served).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

CALIBRATIONS = ("minmax", "percentile", "mse")
SCHEMES = ("symmetric", "affine")
MSE_CANDIDATES = 64


@dataclass(frozen=True)
class Grid:
    """``scale`` and ``zero_point`` per tensor (0-d), per channel (shape ``(channels,)``) or, with
    ``group_size``, per channel and group of columns (shape ``(channels, columns // group_size)``)."""

    scale: torch.Tensor  # float32
    zero_point: torch.Tensor  # int32
    qmin: int
    qmax: int
    group_size: int = 0

    @property
    def per_channel(self) -> bool:
        return self.scale.dim() == 1

    def fake_quantize(self, values: torch.Tensor) -> torch.Tensor:
        """``scale * (clamp(round(values / scale) + zero_point) - zero_point)`` with the straight-
        through gradient of torch's fake-quant ops (gradient 1 inside the range, 0 where clipped)."""
        scale, zero_point = self.scale.to(values.device), self.zero_point.to(values.device)  # no-op when there
        if self.group_size:  # each (channel, group) is one row of the per-channel op
            rows = values.reshape(-1, self.group_size)
            return torch.fake_quantize_per_channel_affine(rows, scale.reshape(-1), zero_point.reshape(-1), 0,
                                                          self.qmin, self.qmax).reshape(values.shape)
        if self.per_channel:
            return torch.fake_quantize_per_channel_affine(values, scale, zero_point, 0, self.qmin, self.qmax)
        return torch.fake_quantize_per_tensor_affine(values, scale, zero_point, self.qmin, self.qmax)


def half_storable(scale: torch.Tensor) -> torch.Tensor:
    """``scale`` rounded up to the nearest float16 number (so the range still fits), where that is a
    normal float16 number; unchanged elsewhere. float32."""
    scale = scale.float()
    half = scale.to(torch.float16)
    up = torch.where(half.float() < scale, torch.nextafter(half, torch.tensor(float("inf"), dtype=half.dtype)), half)
    info = torch.finfo(torch.float16)
    normal = (scale >= info.tiny) & (scale < info.max) & torch.isfinite(up.float())
    return torch.where(normal, up.float(), scale)


def grid_for_range(low: torch.Tensor, high: torch.Tensor, bits: int, scheme: str, half_scales: bool = False) -> Grid:
    """The grid of ``bits`` bits covering ``[low, high]`` (element-wise per channel); ``half_scales``:
    scales rounded up to float16 numbers (``half_storable``) before the zero points are chosen."""
    low, high = torch.minimum(low, torch.zeros_like(low)), torch.maximum(high, torch.zeros_like(high))
    if scheme == "symmetric":
        qmax = 2 ** (bits - 1) - 1
        qmin = -qmax
        scale = _scale(torch.maximum(-low, high) / qmax, half_scales)
        zero_point = torch.zeros_like(scale, dtype=torch.int32)
    else:
        qmin, qmax = 0, 2**bits - 1
        scale = _scale((high - low) / qmax, half_scales)
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))
        zero_point = torch.round(-low / safe).clamp(qmin, qmax).to(torch.int32)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale)).float()  # an all-zero channel: any scale
    return Grid(scale, zero_point, qmin, qmax)


def _scale(scale: torch.Tensor, half_scales: bool) -> torch.Tensor:
    return half_storable(scale) if half_scales else scale


def _rows(weight: torch.Tensor, per_channel: bool) -> torch.Tensor:
    return weight.detach().float().reshape(weight.shape[0] if per_channel else 1, -1)  # (channels, n)


def calibrate(weight: torch.Tensor, bits: int, scheme: str, per_channel: bool, method: str,
              percentile: float = 99.99, group_size: int = 0) -> Grid:
    """The grid for ``weight`` chosen by ``method`` (see the module docstring): per tensor, per
    channel, or (``group_size``, which must divide ``weight[0].numel()``) per channel and group."""
    if group_size:
        grid = calibrate(weight.reshape(-1, group_size), bits, scheme, True, method, percentile)
        shape = (weight.shape[0], -1)
        return Grid(grid.scale.reshape(shape), grid.zero_point.reshape(shape), grid.qmin, grid.qmax, group_size)
    rows = _rows(weight, per_channel)
    if method == "percentile":
        # numpy: torch.quantile refuses more than 2**24 values (a large layer, many activations)
        levels = [1 - percentile / 100, percentile / 100]
        low, high = torch.from_numpy(np.quantile(rows.cpu().numpy(), levels, axis=1)).to(rows.device)
    else:
        low, high = rows.min(dim=1).values, rows.max(dim=1).values
    if method == "mse":
        low, high = _mse_clip(rows, low, high, bits, scheme)
    grid = grid_for_range(low, high, bits, scheme, half_scales=per_channel)
    if not per_channel:
        grid = Grid(grid.scale[0], grid.zero_point[0], grid.qmin, grid.qmax)
    return grid


def _mse_clip(rows: torch.Tensor, low: torch.Tensor, high: torch.Tensor, bits: int,
              scheme: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the fraction of ``[low, high]`` whose grid has the least squared error."""
    best_error = torch.full_like(low, float("inf"))
    best_low, best_high = low.clone(), high.clone()
    for fraction in torch.linspace(1.0 / MSE_CANDIDATES, 1.0, MSE_CANDIDATES):
        grid = grid_for_range(low * fraction, high * fraction, bits, scheme)
        quantized = torch.fake_quantize_per_channel_affine(rows, grid.scale, grid.zero_point, 0, grid.qmin, grid.qmax)
        error = (quantized - rows).pow(2).sum(dim=1)
        better = error < best_error
        best_error = torch.where(better, error, best_error)
        best_low = torch.where(better, low * fraction, best_low)
        best_high = torch.where(better, high * fraction, best_high)
    return best_low, best_high
