"""Structured pruning: remove whole neurons, filters and channels, so the model really shrinks.

Channels are ranked per dependency group (``dependency.py``) by the L1 or L2 norm of the weights
that produce them (Li et al. 2017, "Pruning Filters for Efficient ConvNets", sec. 3.1) or by the
scale of the BatchNorm that follows (Liu et al. 2017, "Network Slimming", sec. 3), and the lowest
``amount`` of each group is cut out of every layer of the group. The result is a smaller dense
model, with measured speed-up and no masks. The log records each changed layer's new sizes, and
the registered rebuilder redoes the shapes on a fresh model so ``load`` can fill in the weights.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from netshrink.core import record_checks
from netshrink.core.config import Config, unlogged
from netshrink.core.errors import ConfigError
from netshrink.core.registry import register
from netshrink.core.selection import LayerFilter, check_layer_names
from netshrink.prune.dependency import CONVS, NORMS, Entry, Group, channel_groups
from netshrink.prune.selection import check_sparsity, smallest
from netshrink.prune.verb import prune_

RANKINGS = ("l1", "l2", "bn")


@dataclasses.dataclass(frozen=True)
class StructuredPrune(Config):
    """Remove the ``amount`` least important channels of every prunable group.

    Args:
        amount: fraction of each group's channels (neurons of a Linear, filters of a Conv) to
            remove, in [0, 1); at least one channel always stays.
        ranking: ``"l1"`` or ``"l2"`` norm of the producing weights, or ``"bn"`` (|gamma| of the
            group's BatchNorms; groups without one fall back to ``"l1"``).
        layers: prune only the groups these layers produce (default: every group whose producing
            layers all pass ``filter_fn``).
        filter_fn: ``filter_fn(module, name) -> bool`` on producing layers (not logged).

    Example:
        >>> prune_(model, StructuredPrune(amount=0.5, filter_fn=lambda m, n: isinstance(m, nn.Conv2d)))
    """

    LAYER_FIELDS = ("layers",)

    amount: float = 0.5
    ranking: str = "l1"
    layers: tuple[str, ...] | None = None
    filter_fn: LayerFilter | None = unlogged()

    def __post_init__(self) -> None:
        check_sparsity(self.amount, "amount")
        if self.ranking not in RANKINGS:
            raise ConfigError(f"unknown ranking {self.ranking!r}; choose one of {list(RANKINGS)}")
        check_layer_names(self.layers)


def _selected(model: nn.Module, groups: list[Group], config: StructuredPrune) -> list[Group]:
    modules = dict(model.named_modules())
    if config.layers is not None:
        producers = {p for g in groups for p in g.producers}
        unknown = [name for name in config.layers if name not in producers]
        if unknown:
            raise ConfigError(f"no layer named {unknown[:3]} produces channels in {type(model).__name__}; "
                              f"layers that do: {sorted(producers)[:12]}")
        chosen = [g for g in groups if set(g.producers) & set(config.layers)]
        blocked = [p for g in chosen if not g.prunable for p in g.producers]
        if blocked:
            raise ConfigError(f"the channels of {blocked[:3]} cannot be removed (they reach the output or an "
                              "operation structured pruning does not follow); prune other layers")
        return chosen
    accept = config.filter_fn or (lambda module, name: True)
    return [g for g in groups if g.prunable and all(accept(modules[p], p) for p in g.producers)]


def channel_scores(model: nn.Module, group: Group, ranking: str) -> tuple[torch.Tensor, str]:
    """Importance of each channel of ``group`` (higher = keep) and the ranking really used."""
    modules = dict(model.named_modules())
    scales = [modules[e.module].weight.detach().abs()[e.offset:e.offset + group.size] for e in group.entries
              if e.role == "channel" and isinstance(modules[e.module], NORMS) and modules[e.module].affine]
    if ranking == "bn" and scales:
        return torch.stack(scales).float().sum(0), "bn"
    order = 1 if ranking in ("l1", "bn") else 2
    norms = [modules[name].weight.detach().flatten(1).float().norm(p=order, dim=1) for name in group.producers]
    return torch.stack(norms).sum(0), "l1" if order == 1 else "l2"


def _indices(entry: Entry, channels: torch.Tensor) -> torch.Tensor:
    """The positions along ``entry``'s dimension that hold ``channels``."""
    base = (entry.offset + channels) * entry.spread
    return (base[:, None] + torch.arange(entry.spread)).flatten()


def _slice_(module: nn.Module, name: str, dim: int, keep: torch.Tensor) -> None:
    tensor = getattr(module, name)
    if tensor is None:
        return
    data = tensor.detach().index_select(dim, keep.to(tensor.device))
    if isinstance(tensor, nn.Parameter):
        setattr(module, name, nn.Parameter(data, requires_grad=tensor.requires_grad))
    else:
        setattr(module, name, data)


def resize_(module: nn.Module, keep: dict[str, torch.Tensor]) -> None:
    """Keep only the ``keep[role]`` indices of ``module`` along ``"out"``, ``"in"`` or ``"channel"``
    (in place: the module's class, hooks and other attributes survive)."""
    if isinstance(module, nn.Linear):
        if "out" in keep:
            _slice_(module, "weight", 0, keep["out"])
            _slice_(module, "bias", 0, keep["out"])
            module.out_features = len(keep["out"])
        if "in" in keep:
            _slice_(module, "weight", 1, keep["in"])
            module.in_features = len(keep["in"])
    elif isinstance(module, CONVS):
        if "channel" in keep:  # depthwise: channel c in = channel c out
            keep = {"out": keep["channel"]}
            module.in_channels = module.groups = len(keep["out"])
        if "out" in keep:
            _slice_(module, "weight", 0, keep["out"])
            _slice_(module, "bias", 0, keep["out"])
            module.out_channels = len(keep["out"])
        if "in" in keep:
            _slice_(module, "weight", 1, keep["in"])
            module.in_channels = len(keep["in"])
    elif isinstance(module, NORMS):
        for name in ("weight", "bias", "running_mean", "running_var"):
            _slice_(module, name, 0, keep["channel"])
        module.num_features = len(keep["channel"])
    else:
        raise ConfigError(f"structured pruning cannot resize a {type(module).__name__}")


def _dimension(module: nn.Module, role: str) -> int:
    if isinstance(module, nn.Linear):
        return module.out_features if role == "out" else module.in_features
    if isinstance(module, CONVS):
        return module.in_channels if role == "in" else module.out_channels
    return module.num_features


def _rebuild(model: nn.Module, record: dict[str, Any]) -> None:
    """Give a fresh model the logged sizes (values come from the file)."""
    for name, roles in record["shapes"].items():
        module = model.get_submodule(name)
        resize_(module, {role: torch.arange(int(size)) for role, size in roles.items()})


_ROLES = {nn.Linear: ("out", "in"), **dict.fromkeys(CONVS, ("out", "in", "channel")),
          **dict.fromkeys(NORMS, ("channel",))}


def _check(model: nn.Module, record: dict[str, Any]) -> None:
    """Each logged layer is one structured pruning resizes, and each size is from 1 to the layer's
    current size: pruning never grows a layer."""
    for name, roles in record_checks.mapping(record.get("shapes"), "shapes").items():
        module = record_checks.layer(model, name, tuple(_ROLES))
        allowed = next(r for kind, r in _ROLES.items() if isinstance(module, kind))
        for role, size in record_checks.mapping(roles, f"shapes of {name[:80]!r}").items():
            record_checks.one_of(role, allowed, f"role of {name[:80]!r}")
            record_checks.size(size, _dimension(module, role), f"{name[:80]!r} {role} size")


@register(StructuredPrune, "structured_prune", rebuild=_rebuild, check=_check, structural=True, verb=prune_,
          aliases=("prune_structured",))
def _structured_prune(model: nn.Module, config: StructuredPrune) -> dict:
    if any(parametrize.is_parametrized(m) for m in model.modules()):
        raise ConfigError("the model carries masks or other parametrizations; call finalize_(model) before "
                          "structured pruning")
    groups = channel_groups(model)
    chosen = _selected(model, groups, config)
    if not chosen:
        raise ConfigError(f"nothing to prune in {type(model).__name__}: no channel group can be removed "
                          f"(of {len(groups)} groups, {sum(g.prunable for g in groups)} are prunable and pass "
                          "the filter); check filter_fn or layers")
    modules = dict(model.named_modules())
    removed: dict[tuple[str, str], set[int]] = {}
    summary = []
    for group in chosen:
        count = min(math.floor(config.amount * group.size), group.size - 1)
        scores, used = channel_scores(model, group, config.ranking)
        drop = torch.sort(smallest(scores, count)).values
        for entry in group.entries:
            removed.setdefault((entry.module, entry.role), set()).update(_indices(entry, drop).tolist())
        summary.append({"layers": group.producers, "channels": group.size, "removed": count, "ranking": used})
    shapes: dict[str, dict[str, int]] = {}
    for (name, role), drop in removed.items():
        module = modules[name]
        size = _dimension(module, role)
        keep = torch.tensor([i for i in range(size) if i not in drop], dtype=torch.long)
        resize_(module, {role: keep})
        shapes.setdefault(name, {})[role] = len(keep)
    return {"shapes": shapes, "groups": summary}
