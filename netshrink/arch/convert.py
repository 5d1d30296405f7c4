"""What both conversions share: choosing the layers, refusing bad requests, doing the surgery.

A layer named in ``layers`` that cannot be converted is an error (the user asked for it); a layer
picked by default that cannot be converted (a grouped convolution, an attention projection that
``nn.MultiheadAttention`` reads directly, a rank the layer cannot have) is skipped with a note in
the log record. Every layer's plan is made and checked before the first one is replaced, so a
refused conversion leaves the model as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from netshrink.arch.factorize import factor_weights
from netshrink.arch.structure import dense_weights, factored, factored_weights, max_rank
from netshrink.core.errors import ConfigError
from netshrink.core.modules import set_module
from netshrink.core.selection import LayerFilter, select


def candidates(model: nn.Module, layer_types: tuple[type[nn.Module], ...], layers: tuple[str, ...] | None,
               filter_fn: LayerFilter | None, obstacle: Callable[[str, nn.Module], str | None]
               ) -> tuple[dict[str, nn.Module], dict[str, str]]:
    """``(chosen, skipped)``: of the layers ``core.select`` picks (parametrized ones refused), the
    ones to convert and, for layers left out, why.

    ``obstacle(name, module)`` says why a layer of the right type cannot be converted (None: it can);
    for a layer named in ``layers`` that is a ConfigError.
    """
    selected = select(model, layers, filter_fn, kinds=layer_types, refuse_parametrized=True)
    chosen, skipped = {}, {}
    for name, module in selected.items():
        reason = obstacle(name, module)
        if reason is None:
            chosen[name] = module
        elif layers is not None:
            raise ConfigError(f"cannot convert layer {name!r}: {reason}")
        else:
            skipped[name] = reason
    return chosen, skipped


def rank_obstacle(module: nn.Module, kind: str, rank: int, what: str = "rank") -> str | None:
    """Why ``module`` cannot have ``rank`` (above the largest meaningful one), or None."""
    most = max_rank(module, kind)
    if rank > most:
        return f"{what} {rank} is larger than this layer allows (at most {most} for a {kind} factorization)"
    return None


def nothing_to_convert(model: nn.Module, verb: str, skipped: dict[str, str], kinds: str) -> ConfigError:
    """The error when no layer is left to convert, with the first reason a layer was skipped."""
    if skipped:
        name, reason = next(iter(skipped.items()))
        why = f"no selected layer can be converted; e.g. {name!r}: {reason}"
    else:
        why = f"it has no {kinds} layer that passes filter_fn"
    return ConfigError(f"nothing to convert in {type(model).__name__} with {verb}: {why}")


def replace_layers(model: nn.Module, modules: dict[str, nn.Module], plans: dict[str, tuple[str, int]],
                   init: str = "svd") -> dict[str, dict[str, Any]]:
    """Replace each planned layer (``name -> (kind, rank)``) by its two-layer factorization,
    initialised by truncated SVD (``init="svd"``) or PyTorch's default initialisation
    (``"random"``, kept for comparison); the bias is kept either way. Returns the per-layer
    report that goes into the log: kind, rank, weights before and after, and their ratio."""
    report = {}
    for name, (kind, rank) in plans.items():
        module = modules[name]
        new = factored(module, kind, rank)
        with torch.no_grad():
            if init == "svd":
                first, second = factor_weights(module.weight, kind, rank)
                new[0].weight.copy_(first)
                new[1].weight.copy_(second)
            if module.bias is not None:
                new[1].bias.copy_(module.bias)
        new.train(module.training)
        set_module(model, name, new)
        before, after = dense_weights(module), factored_weights(module, kind, rank)
        report[name] = {"kind": kind, "rank": rank, "weights_before": before, "weights_after": after,
                        "ratio": round(before / after, 4)}
    return report
