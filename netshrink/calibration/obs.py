"""The column-by-column Optimal Brain Surgeon sweep that GPTQ and SparseGPT share.

Both fix the columns of a layer's weight ``W`` (rows: outputs; columns: inputs) one at a time to
a target (GPTQ: the column rounded to the grid; SparseGPT: the column with its pruned weights
zeroed) and spread each column's error over the columns not yet fixed, weighted by the inverse
Hessian of the layer-wise problem (``calibration.hessian``), so the layer's outputs on the
calibration inputs move as little as possible:

- GPTQ, Frantar et al. 2022, Algorithm 1: ``E = (W[:, j] - Q[:, j]) / [H^-1]_jj`` and
  ``W[:, j:] -= E [H^-1]_{j, j:}``, with ``H^-1`` replaced by the upper Cholesky factor of
  ``H^-1`` (section 3, step 3), whose row ``j`` is the inverse Hessian of the columns from ``j`` on
  after the earlier ones were fixed, and with the updates of the columns beyond the current block
  of ``block_size`` columns batched into one matrix product per block ("lazy batch updates",
  step 2);
- SparseGPT, Frantar & Alistarh 2023, Algorithm 1: the same recursion with ``Q`` the column with
  its masked weights set to zero (section 3.2), the mask chosen lazily per block of columns
  (adaptive mask selection, section 3.3) from the current weights and the factor's diagonal.

``H`` is dampened by ``damp`` times its mean diagonal (GPTQ section 3, "numerical stability");
inputs that never varied (a zero on the diagonal) get a unit diagonal and their weights are zeroed,
as in the reference implementation.
"""

from __future__ import annotations

from typing import Protocol

import torch

from netshrink.core.errors import ConfigError

BLOCK_SIZE = 128


def dampened(hessian: torch.Tensor, damp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(H', dead)``: a float64 copy of ``H`` (a large H loses float32's precision) with a unit
    diagonal where an input never varied (``dead``) and ``damp`` times its mean diagonal added."""
    hessian = hessian.double().clone()
    diagonal = torch.diagonal(hessian)
    dead = diagonal == 0
    diagonal[dead] = 1.0
    diagonal += damp * float(diagonal.mean())
    return hessian, dead


def inverse_hessian_factor(hessian: torch.Tensor, damp: float, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(U, dead)``: the upper Cholesky factor of the dampened ``H^-1`` and the mask of inputs that
    never varied; a one-line ConfigError when ``H`` is not positive definite even dampened."""
    hessian, dead = dampened(hessian, damp)
    try:
        inverse = torch.cholesky_inverse(torch.linalg.cholesky(hessian))
        factor = torch.linalg.cholesky(inverse, upper=True)
    except torch.linalg.LinAlgError:
        raise ConfigError(f"layer {layer!r}: the Hessian of its calibration inputs is not positive definite; raise "
                          f"damp (now {damp}) or give more calibration data") from None
    return factor.float(), dead


class Target(Protocol):
    """What a sweep fixes each column to."""

    def column(self, j: int, block: torch.Tensor, offset: int) -> torch.Tensor:
        """The target of column ``j`` of the weight; ``block`` is the current sweep block (its
        columns ``offset`` on are not fixed yet and hold their updated values), so a target can
        choose a grid or a mask for the columns ahead from them."""
        ...


def sweep(weight: torch.Tensor, factor: torch.Tensor, target: Target,
          block_size: int = BLOCK_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Q, losses)``: every column of ``weight`` (``(rows, columns)``, in the factor's column
    order) fixed to ``target``'s value with the error feedback of the module docstring, and each
    weight's share ``(w - q)^2 / (2 [U]_jj^2)`` of the layer's output error (GPTQ's ``Losses``).
    Sweep blocks start at multiples of ``block_size``, so a target choosing grids or masks for
    groups of columns that divide ``block_size`` always sees them whole and current."""
    weight = weight.float().clone()
    quantized, losses = torch.zeros_like(weight), torch.zeros_like(weight)
    columns = weight.shape[1]
    for start in range(0, columns, block_size):
        end = min(start + block_size, columns)
        block, errors = weight[:, start:end].clone(), torch.zeros_like(weight[:, start:end])
        local = factor[start:end, start:end]
        for i in range(end - start):
            value = block[:, i]
            fixed = target.column(start + i, block, i)
            pivot = local[i, i]
            error = (value - fixed) / pivot
            quantized[:, start + i], losses[:, start + i] = fixed, (value - fixed).pow(2) / pivot.pow(2) / 2
            block[:, i:] -= error.unsqueeze(1) @ local[i, i:].unsqueeze(0)
            errors[:, i] = error
        weight[:, end:] -= errors @ factor[start:end, end:]
    return quantized, losses
