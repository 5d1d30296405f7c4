"""Magnitude pruning (Han et al. 2015, sec. 3): zero the weights of smallest absolute value.

``scope="layer"`` removes the same fraction from every layer; ``scope="global"`` ranks all chosen
weights together, so layers with many small weights lose more (Han et al.'s per-layer rates differ
the same way). ``sparsity`` may also be a ``{layer: sparsity}`` plan (``layer_sensitivity.sensitivity_plan``).
Sparsity is exact: ``round(s * n)`` weights are removed, ties in magnitude broken by position
(a stable sort), so the same weights always give the same mask. Weights pruned before keep
magnitude zero and so stay pruned: calling it again with a higher sparsity prunes further
(gradual and iterative pruning do exactly that).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from netshrink.core import record_checks
from netshrink.core.config import Config, unlogged
from netshrink.core.errors import ConfigError
from netshrink.core.registry import register
from netshrink.core.selection import LayerFilter, check_layer_names, select, weight_name
from netshrink.prune.masks import PRUNABLE_LAYERS, set_mask
from netshrink.prune.selection import check_sparsity, smallest
from netshrink.prune.verb import prune_

SCOPES = ("layer", "global")


@dataclasses.dataclass(frozen=True)
class MagnitudePrune(Config):
    """Prune the smallest-magnitude weights with masks that hold during training.

    Args:
        sparsity: fraction of the chosen weights set to zero, in [0, 1); or ``{layer: sparsity}``.
        scope: ``"layer"`` (each layer loses ``sparsity`` of its weights) or ``"global"`` (one
            threshold over all chosen weights).
        layers: names of the layers to prune (default: every layer ``filter_fn`` accepts).
        filter_fn: ``filter_fn(module, name) -> bool`` picking among the Linear, Conv and attention
            in-projection layers (default: all of them). Not stored in the log; the log lists the
            layers pruned.

    Example:
        >>> prune_(model, MagnitudePrune(sparsity=0.9, scope="global"))
    """

    LAYER_FIELDS = ("layers", "sparsity")

    sparsity: float | dict[str, float] = 0.5
    scope: str = "layer"
    layers: tuple[str, ...] | None = None
    filter_fn: LayerFilter | None = unlogged()

    def __post_init__(self) -> None:
        if isinstance(self.sparsity, dict):
            if not self.sparsity:
                raise ConfigError("the sparsity plan is empty; give {layer name: sparsity}")
            for name, value in self.sparsity.items():
                check_sparsity(value, f"sparsity of {name!r}")
            if self.scope != "layer":
                raise ConfigError("a per-layer sparsity plan needs scope='layer'")
        else:
            check_sparsity(self.sparsity)
        if self.scope not in SCOPES:
            raise ConfigError(f"unknown scope {self.scope!r}; choose one of {list(SCOPES)}")
        check_layer_names(self.layers)


def _effective(module: nn.Module, tensor_name: str) -> torch.Tensor:
    return getattr(module, tensor_name).detach()  # already masked when a mask is on


def magnitude_masks(targets: list[tuple[str, nn.Module, str]], sparsity: float | dict[str, float],
                    scope: str) -> dict[str, torch.Tensor]:
    """``{layer: 0/1 mask}`` removing exactly ``round(sparsity * n)`` weights by magnitude."""
    magnitudes = {name: _effective(module, tensor).abs().float() for name, module, tensor in targets}
    masks = {name: torch.ones_like(m) for name, m in magnitudes.items()}
    if scope == "global":
        flat = torch.cat([m.flatten() for m in magnitudes.values()])
        drop = smallest(flat, round(sparsity * flat.numel()))
        joined = torch.ones_like(flat)
        joined[drop] = 0
        start = 0
        for name, m in magnitudes.items():
            masks[name] = joined[start:start + m.numel()].view_as(m)
            start += m.numel()
        return masks
    for name, m in magnitudes.items():
        layer_sparsity = sparsity[name] if isinstance(sparsity, dict) else sparsity
        masks[name].view(-1)[smallest(m, round(layer_sparsity * m.numel()))] = 0
    return masks


def _check(model: nn.Module, record: dict) -> None:
    record_checks.layers(model, record.get("layers"))


@register(MagnitudePrune, "magnitude_prune", rebuild=None, check=_check, verb=prune_, aliases=("prune",))
def _magnitude_prune(model: nn.Module, config: MagnitudePrune) -> dict:
    layers = tuple(config.sparsity) if isinstance(config.sparsity, dict) else config.layers
    targets = [(name, module, weight_name(module))
               for name, module in select(model, layers, config.filter_fn, kinds=PRUNABLE_LAYERS).items()]
    if not targets:
        raise ConfigError(f"nothing to prune in {type(model).__name__}: no Linear, Conv or attention layer "
                          "passes the filter; check filter_fn or name the layers")
    masks = magnitude_masks(targets, config.sparsity, config.scope)
    kept = {}
    for name, module, tensor_name in targets:
        set_mask(module, tensor_name, masks[name])
        kept[name] = float(masks[name].mean())
    return {"layers": [name for name, _, _ in targets], "kept": kept}
