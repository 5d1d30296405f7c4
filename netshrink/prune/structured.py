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
from netshrink.core.errors import ConfigError, NetshrinkFormatError
from netshrink.core.registry import register
from netshrink.core.selection import LayerFilter, check_layer_names
from netshrink.prune.channel_rules import CONVS, NORMS, module_rule
from netshrink.prune.dependency import Entry, Group, channel_groups
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
        blocked = next((g for g in chosen if not g.prunable), None)
        if blocked is not None:
            raise ConfigError(f"the channels of {blocked.producers[:3]} cannot be removed: {blocked.blocked_by}; "
                              "prune other layers")
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


def resize_(module: nn.Module, keep: dict[str, torch.Tensor]) -> None:
    """Keep only the ``keep[role]`` indices of ``module`` along ``"out"``, ``"in"`` or ``"channel"``
    (in place: the module's class, hooks and other attributes survive), by its registered resizer."""
    rule = module_rule(module)
    if rule is None or rule.resize is None:
        raise ConfigError(f"structured pruning cannot resize a {type(module).__name__}; register_channel_rule("
                          f"{type(module).__name__}, rule, resize=...) teaches it")
    rule.resize(module, keep)


def _check_resizable(modules: dict[str, nn.Module], groups: list[Group]) -> None:
    """Refuse before anything is cut when a layer of the groups has no resizer."""
    for name in {e.module for g in groups for e in g.entries}:
        rule = module_rule(modules[name])
        if rule is None or rule.resize is None:
            kind = type(modules[name]).__name__
            raise ConfigError(f"structured pruning cannot resize layer {name!r} ({kind}); give its channel rule a "
                              f"resize: register_channel_rule({kind}, rule, resize=...)")


def _rebuild(model: nn.Module, record: dict[str, Any]) -> None:
    """Give a fresh model the logged sizes (values come from the file)."""
    for name, roles in record["shapes"].items():
        module = model.get_submodule(name)
        resize_(module, {role: torch.arange(int(size)) for role, size in roles.items()})


#: the roles a logged size may have (``resize_``'s keys)
ROLES = ("out", "in", "channel")


def _role_sizes(module: nn.Module) -> dict[str, int]:
    """The roles a logged size may have for ``module`` and each one's current size: pruning never
    grows a layer. A user's registered layer: any role, bounded by its longest tensor dimension."""
    if isinstance(module, nn.Linear):
        return {"out": module.out_features, "in": module.in_features}
    if isinstance(module, CONVS):
        return {"out": module.out_channels, "in": module.in_channels, "channel": module.out_channels}
    if isinstance(module, NORMS):
        return {"channel": module.num_features}
    tensors = [*module.parameters(recurse=False), *module.buffers(recurse=False)]
    return dict.fromkeys(ROLES, max((max(t.shape, default=1) for t in tensors), default=0))


def _check(model: nn.Module, record: dict[str, Any]) -> None:
    """Each logged layer is one structured pruning can resize (a registered rule with a resizer),
    each role one the layer has, and each size from 1 to that role's current size."""
    for name, roles in record_checks.mapping(record.get("shapes"), "shapes").items():
        module = record_checks.layer(model, name)
        rule = module_rule(module)
        if rule is None or rule.resize is None:
            raise NetshrinkFormatError(f"layer {name[:80]!r} ({type(module).__name__}) has no structured-pruning "
                                       "resizer")
        sizes = _role_sizes(module)
        for role, size in record_checks.mapping(roles, f"shapes of {name[:80]!r}").items():
            record_checks.one_of(role, tuple(sizes), f"role of {name[:80]!r}")
            record_checks.size(size, sizes[role], f"{name[:80]!r} {role} size")


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
    _check_resizable(modules, chosen)
    drops: dict[tuple[str, str], set[int]] = {}
    widths: dict[tuple[str, str], int] = {}
    summary = []
    for group in chosen:
        count = min(math.floor(config.amount * group.size), group.size - 1)
        scores, used = channel_scores(model, group, config.ranking)
        drop = torch.sort(smallest(scores, count)).values
        for entry in group.entries:
            drops.setdefault((entry.module, entry.role), set()).update(_indices(entry, drop).tolist())
            widths[entry.module, entry.role] = entry.width
        summary.append({"layers": group.producers, "channels": group.size, "removed": count, "ranking": used})
    shapes: dict[str, dict[str, int]] = {}
    for (name, role), drop in drops.items():
        keep = torch.tensor([i for i in range(widths[name, role]) if i not in drop], dtype=torch.long)
        resize_(modules[name], {role: keep})
        shapes.setdefault(name, {})[role] = len(keep)
    return {"shapes": shapes, "groups": summary}
