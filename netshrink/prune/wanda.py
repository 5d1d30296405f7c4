"""Wanda (Sun et al. 2023, "A Simple and Effective Pruning Approach for Large Language Models"):
prune by weights and activations, ``|W_ij| * ||X_j||_2``, without updating the weights that remain.

``prune_(model, Wanda(sparsity=0.5, calibration_data=batches))`` runs the model block by block
(``calibration.layerwise``, as Wanda's reference ``prune_wanda`` does, each block on the outputs of
the blocks already pruned) and keeps, per Linear / Conv layer, the norm of every input feature over
the calibration inputs (the diagonal of ``calibration.hessian``'s statistics). The score of a weight
is its magnitude times its input's norm (section 3, Eq. 1); weights are compared within each output
row (the per-output comparison group of section 3), removing the ``sparsity`` fraction of lowest
scores of every row, or, for N:M, the ``M - N`` lowest of every ``M`` consecutive inputs. The mask
goes on as a parametrization (``prune.masks``) so it holds through ``fit``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import nn

from netshrink.calibration.hessian import LayerInputs
from netshrink.calibration.solve import row_groups, solve_layers, write_weight
from netshrink.core.registry import register
from netshrink.prune.calibrated import CalibratedPrune, check_record
from netshrink.prune.masks import current_mask, set_mask
from netshrink.prune.patterns import lowest_mask, n_m_mask, parse_pattern
from netshrink.prune.verb import prune_


@dataclasses.dataclass(frozen=True)
class Wanda(CalibratedPrune):
    """Prune Linear and Conv layers by ``|W| * ||X||`` on calibration data (see the module
    docstring; the options are ``CalibratedPrune``'s).

    Example:
        >>> prune_(model, Wanda(sparsity=0.5, calibration_data=batches)); finalize_(model)
    """


def wanda_mask(weight: torch.Tensor, norms: torch.Tensor, config: Wanda,
               prior: torch.Tensor | None = None) -> torch.Tensor:
    """The 0/1 mask of ``weight`` ``(rows, columns)`` given its input features' ``norms`` ``(columns,)``."""
    scores = weight.abs().float() * norms.unsqueeze(0)
    n_m = parse_pattern(config.pattern)
    return n_m_mask(scores, *n_m, prior) if n_m else lowest_mask(scores, config.fraction, prior)


def _prune_layer(module: nn.Module, inputs: LayerInputs, config: Wanda) -> tuple[dict, Callable]:
    weight = module.weight.detach().flatten(1)
    prior = current_mask(module, "weight")
    norms = inputs.feature_norms()
    mask = torch.cat([wanda_mask(weight[rows], norms[g], config, None if prior is None else prior.flatten(1)[rows])
                      for g, rows in enumerate(row_groups(module))]).reshape(module.weight.shape)
    write_weight(module, weight * mask.flatten(1))  # the blocks after this one run on the pruned layer
    return {"kept": float(mask.mean())}, lambda: set_mask(module, "weight", mask)


@register(Wanda, "wanda", rebuild=None, check=check_record, verb=prune_)
def _wanda(model: nn.Module, config: Wanda) -> dict:
    return solve_layers(model, config, lambda name, module, inputs: _prune_layer(module, inputs, config),
                        config.check_layer, diagonal=True)
