"""SparseGPT (Frantar & Alistarh 2023, "SparseGPT: Massive Language Models Can Be Accurately Pruned
in One-Shot"): prune each layer so that its outputs on calibration inputs move as little as
possible, updating the weights that remain to make up for the ones removed.

``prune_(model, SparseGPT(sparsity=0.5, calibration_data=batches))`` runs the model block by block
(``calibration.layerwise``, the paper's section 3.5 / its reference ``*_sequential`` functions),
accumulates each Linear / Conv layer's Hessian ``H = 2 X X^T`` (``calibration.hessian``), and runs
Algorithm 1 through the OBS sweep GPTQ uses too (``calibration.obs.sweep``): each column's pruned
weights are set to zero and their error ``w / [H^-1]_jj`` is spread over the columns not yet
visited (the OBS update, section 3.2), with lazy batch updates over blocks of ``block_size``
columns. The mask is chosen as the sweep goes (adaptive mask selection, section 3.3): for
unstructured sparsity, the ``sparsity`` fraction of lowest ``w^2 / [U]_jj^2`` in each block of
``block_size`` columns; for N:M (section 3.4), the ``M - N`` lowest of every ``M`` consecutive
columns of each row, chosen when the sweep reaches them. The mask goes on as a parametrization
(``prune.masks``) so it holds through ``fit``, and the updated weights are written in.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
from torch import nn

from netshrink.calibration.hessian import LayerInputs
from netshrink.calibration.obs import BLOCK_SIZE, inverse_hessian_factor, sweep
from netshrink.calibration.solve import refuse_other_parametrizations, solve_layers, solve_row_groups
from netshrink.core.errors import ConfigError
from netshrink.core.registry import register
from netshrink.prune.calibrated import CalibratedPrune, check_record
from netshrink.prune.masks import current_mask, set_mask
from netshrink.prune.patterns import lowest_mask, n_m_mask, parse_pattern
from netshrink.prune.verb import prune_


@dataclasses.dataclass(frozen=True)
class SparseGPT(CalibratedPrune):
    """Prune Linear and Conv layers with SparseGPT on calibration data (see the module docstring;
    the shared options are ``CalibratedPrune``'s).

    Args:
        damp: fraction of the mean diagonal of ``H`` added to its diagonal (``percdamp``).
        asymmetric: each layer reproduces the original model's outputs on the original's inputs,
            making up for the layers pruned before it (``calibration.hessian.asymmetric_target``);
            False: its own outputs on the inputs it now gets, as SparseGPT.
        block_size: columns per lazy batch update and per unstructured mask choice (rounded up to
            a multiple of M for an N:M pattern).

    Example:
        >>> prune_(model, SparseGPT(pattern="2:4", calibration_data=batches)); finalize_(model)
    """

    damp: float = 0.01
    asymmetric: bool = False
    block_size: int = BLOCK_SIZE

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.asymmetric, bool):
            raise ConfigError(f"asymmetric must be True or False, got {self.asymmetric!r}")
        if isinstance(self.damp, bool) or not isinstance(self.damp, (int, float)) or not 0 <= self.damp <= 1:
            raise ConfigError(f"damp must be a number in [0, 1], got {self.damp!r}")
        if isinstance(self.block_size, bool) or not isinstance(self.block_size, int) or self.block_size < 1:
            raise ConfigError(f"block_size must be a positive integer, got {self.block_size!r}")


class _MaskTarget:
    """SparseGPT's column target: the column with the weights its mask removes set to zero; the
    mask of a block (unstructured) or of ``M`` columns (N:M) is chosen when the sweep reaches it."""

    def __init__(self, pivots: torch.Tensor, config: SparseGPT, prior: torch.Tensor | None, rows: int) -> None:
        self.pivots, self.prior, self.sparsity = pivots, prior, config.fraction
        self.n_m = parse_pattern(config.pattern)
        self.mask = torch.ones(rows, len(pivots), device=pivots.device)

    def column(self, j: int, block: torch.Tensor, offset: int) -> torch.Tensor:
        if self.n_m is None and offset == 0:
            columns = slice(j, j + block.shape[1])
            scores = block.pow(2) / self.pivots[columns].pow(2)
            self.mask[:, columns] = lowest_mask(scores, self.sparsity, self._prior(columns), per_row=False)
        elif self.n_m is not None and j % self.n_m[1] == 0:
            columns = slice(j, j + self.n_m[1])
            scores = block[:, offset:offset + self.n_m[1]].pow(2) / self.pivots[columns].pow(2)
            self.mask[:, columns] = n_m_mask(scores, *self.n_m, self._prior(columns))
        return block[:, offset] * self.mask[:, j]

    def _prior(self, columns: slice) -> torch.Tensor | None:
        return None if self.prior is None else self.prior[:, columns]


def sparsegpt_weight(weight: torch.Tensor, hessian: torch.Tensor, config: SparseGPT, prior: torch.Tensor | None = None,
                     layer: str = "") -> tuple[torch.Tensor, torch.Tensor, float]:
    """``(W', mask, loss)``: SparseGPT of ``weight`` ``(rows, columns)`` given its inputs' ``hessian``;
    ``W'`` is zero where ``mask`` is (and where ``prior`` was), ``loss`` the estimated output error."""
    weight = weight.float().clone()
    weight[:, torch.diagonal(hessian) == 0] = 0  # inputs that never varied, as the reference code
    factor, _ = inverse_hessian_factor(hessian, config.damp, layer)
    target = _MaskTarget(torch.diagonal(factor), config, prior, weight.shape[0])
    n_m = parse_pattern(config.pattern)
    block = math.ceil(config.block_size / n_m[1]) * n_m[1] if n_m else config.block_size
    pruned, losses = sweep(weight, factor, target, block)
    return pruned, target.mask, float(losses.sum())


def _prune_layer(name: str, module: nn.Module, inputs: LayerInputs, config: SparseGPT) -> tuple[dict, Callable]:
    masks, loss = solve_row_groups(module, inputs, current_mask(module, "weight"),
                                   lambda rows, hessian, prior: sparsegpt_weight(rows, hessian, config, prior, name),
                                   config.damp)
    mask = torch.cat(masks).reshape(module.weight.shape)
    return {"kept": float(mask.mean()), "loss": loss}, lambda: set_mask(module, "weight", mask)


def _check_layer(name: str, module: nn.Module, config: SparseGPT) -> None:
    refuse_other_parametrizations(name, module, "SparseGPT")
    config.check_layer(name, module)


@register(SparseGPT, "sparsegpt", rebuild=None, check=check_record, verb=prune_)
def _sparsegpt(model: nn.Module, config: SparseGPT) -> dict:
    return solve_layers(model, config, lambda name, module, inputs: _prune_layer(name, module, inputs, config),
                        lambda name, module: _check_layer(name, module, config), reference=config.asymmetric)
