"""Pruning masks as ``torch.nn.utils.parametrize`` parametrizations: ``weight = original * mask``.

Because the mask sits in the forward pass, a pruned weight stays exactly zero inside ``fit()`` and
inside any hand-written training loop: its gradient is zero, and the optimizer keeps the same
``Parameter`` (``parametrizations.weight.original``). ``finalize_`` bakes the product in with
``remove_parametrizations(..., leave_parametrized=True)``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from netshrink.core.selection import WEIGHTED_LAYERS

PRUNABLE_LAYERS = (*WEIGHTED_LAYERS, nn.MultiheadAttention)
"""What pruning acts on (``core.select``'s kinds): Linear and Conv layers, and the packed q/k/v
projection of ``nn.MultiheadAttention`` (its output projection is a Linear already)."""


class Mask(nn.Module):
    """The parametrization ``w -> w * mask`` with the 0/1 mask kept as a buffer (saved in
    checkpoints, so a resumed ``fit`` keeps it)."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask


def current_mask(module: nn.Module, tensor_name: str) -> torch.Tensor | None:
    """The mask already on ``module.tensor_name``, or None."""
    if parametrize.is_parametrized(module, tensor_name):
        for p in module.parametrizations[tensor_name]:
            if isinstance(p, Mask):
                return p.mask
    return None


def set_mask(module: nn.Module, tensor_name: str, mask: torch.Tensor) -> None:
    """Put ``mask`` on ``module.tensor_name`` (updating an existing Mask in place, so an optimizer
    holding the original Parameter keeps working) and zero the original where the mask is zero."""
    weight = getattr(module, tensor_name)
    mask = mask.to(device=weight.device, dtype=weight.dtype)
    existing = current_mask(module, tensor_name)
    if existing is not None:
        existing.copy_(mask)
        original = module.parametrizations[tensor_name].original
    else:
        parametrize.register_parametrization(module, tensor_name, Mask(mask))
        original = module.parametrizations[tensor_name].original
    with torch.no_grad():
        original.masked_fill_(mask == 0, 0.0)  # +0.0, so no -0.0 is left for save to store


def mask_sparsity(model: nn.Module) -> dict[str, float]:
    """Fraction of zeros in every mask on the model, keyed ``layer.tensor``."""
    out = {}
    for name, module in model.named_modules():
        if parametrize.is_parametrized(module):
            for tensor_name in module.parametrizations.keys():
                mask = current_mask(module, tensor_name)
                if mask is not None:
                    out[f"{name}.{tensor_name}" if name else tensor_name] = 1.0 - float(mask.mean())
    return out
