"""``low_rank_``: factorize Linear and Conv2d layers by truncated SVD, rank by energy or by budget.

A dense W (O x I) is replaced by two layers whose product is its best rank-r approximation,
r(I + O) weights against I O (Denton et al. 2014, "Exploiting Linear Structure Within
Convolutional Networks", sec. 3). A Conv2d is factorized either across channels (a k x k conv to r
channels, then 1 x 1) or across space (a k x 1 conv to r channels, then 1 x k; Jaderberg et al.
2014 sec. 3.1 scheme 2); see ``factorize.py``. The rank of each layer is

- ``rank``: the same r everywhere;
- ``energy``: per layer, the smallest r whose singular values keep that share of sum(s^2);
- ``param_ratio``: a global budget: the selected layers keep about that fraction of their weights.
  Every layer gets rank 1, then singular values are added, over all layers, in the order of
  their share of their layer's energy per weight they cost, while the budget allows.

A layer whose factorization would not have fewer weights than it has now is left alone (with a
note), as is any layer ``convert.candidates`` cannot convert.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import nn

from netshrink.arch.convert import (
    candidates,
    nothing_to_convert,
    rank_obstacle,
    replace_layers,
)
from netshrink.arch.factorize import energy_rank, singular_values
from netshrink.arch.structure import (
    check_factored,
    dense_weights,
    factored_weights,
    max_rank,
    rebuild_factored,
    repair_batchnorm,
)
from netshrink.core.config import Config, unlogged
from netshrink.core.errors import ConfigError
from netshrink.core.registry import apply_, register
from netshrink.core.selection import LayerFilter, check_layer_names

CONV_MODES = ("channel", "spatial")


def check_fraction(value: Any, name: str) -> None:
    """``value`` is a number in (0, 1]."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 < value <= 1.0:
        raise ConfigError(f"{name} must be in (0, 1], got {value!r}")


@dataclasses.dataclass(frozen=True)
class LowRank(Config):
    """Factorize Linear and Conv2d layers into two smaller layers by truncated SVD.

    Give exactly one of ``rank``, ``energy``, ``param_ratio``.

    Args:
        rank: the same rank r in every layer (an integer >= 1).
        energy: per layer, the least rank keeping this share of the squared singular values, in (0, 1].
        param_ratio: global budget: the converted layers keep about this fraction of their weights, in (0, 1].
        conv: ``"channel"`` (k x k to r channels, then 1 x 1) or ``"spatial"`` (k x 1, then 1 x k).
        layers: factorize only these layers (``named_modules`` names); by default every Linear and
            Conv2d that can be factorized and passes ``filter_fn``.
        filter_fn: ``filter_fn(module, name) -> bool`` on candidate layers (not logged).

    Example:
        >>> low_rank_(model, LowRank(energy=0.9, filter_fn=lambda m, n: isinstance(m, nn.Linear)))
    """

    LAYER_FIELDS = ("layers",)

    rank: int | None = None
    energy: float | None = None
    param_ratio: float | None = None
    conv: str = "channel"
    layers: tuple[str, ...] | None = None
    filter_fn: LayerFilter | None = unlogged()

    def __post_init__(self) -> None:
        given = [n for n in ("rank", "energy", "param_ratio") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ConfigError(f"give exactly one of rank, energy, param_ratio (got {given or 'none'})")
        if self.rank is not None and (not isinstance(self.rank, int) or isinstance(self.rank, bool) or self.rank < 1):
            raise ConfigError(f"rank must be an integer >= 1, got {self.rank!r}")
        if self.energy is not None:
            check_fraction(self.energy, "energy")
        if self.param_ratio is not None:
            check_fraction(self.param_ratio, "param_ratio")
        if self.conv not in CONV_MODES:
            raise ConfigError(f"unknown conv factorization {self.conv!r}; choose one of {list(CONV_MODES)}")
        check_layer_names(self.layers)


def low_rank_(model: nn.Module, config: LowRank) -> nn.Module:
    """Factorize ``model``'s layers in place (see ``LowRank``); logged, so save/load restore it."""
    return apply_(model, config)


def kind_of(module: nn.Module, config: LowRank) -> str:
    return "linear" if isinstance(module, nn.Linear) else config.conv


def structure_obstacle(model: nn.Module, name: str, module: nn.Module, kind: str) -> str | None:
    """Why ``module`` cannot be factorized as ``kind`` at all, or None."""
    parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    if isinstance(parent, nn.MultiheadAttention):
        return "nn.MultiheadAttention reads this projection's weight directly, so it cannot be replaced"
    if isinstance(parent, (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)) and parent.self_attn.batch_first:
        return "a batch_first transformer layer's fused inference path reads this layer's weight directly"
    if kind == "linear":
        return None
    if module.groups != 1:
        return f"grouped convolution (groups={module.groups}); only groups=1 convolutions are factorized"
    if kind == "spatial":
        if 1 in module.kernel_size:
            return f"a {module.kernel_size[0]}x{module.kernel_size[1]} kernel has no two spatial axes to split"
        if isinstance(module.padding, str) or module.padding_mode != "zeros":
            return "spatial factorization keeps only numeric zero padding; use conv='channel'"
    return None


def _useful_rank(module: nn.Module, kind: str) -> int:
    """The largest rank whose factorization has fewer weights than the dense layer (0: none)."""
    per_rank = factored_weights(module, kind, 1)
    return min(max_rank(module, kind), math.ceil(dense_weights(module) / per_rank) - 1)


def budget_ranks(modules: dict[str, nn.Module], kinds: dict[str, str], spectra: dict[str, torch.Tensor],
                 ratio: float) -> dict[str, int]:
    """Ranks under a global weight budget of ``ratio`` times the layers' dense weights (see the
    module docstring); a ConfigError when even rank 1 everywhere does not fit."""
    budget = ratio * sum(dense_weights(m) for m in modules.values())
    cost = {n: factored_weights(m, kinds[n], 1) for n, m in modules.items()}
    ranks = dict.fromkeys(modules, 1)
    used = sum(cost.values())
    if used > budget:
        raise ConfigError(f"param_ratio {ratio} is below what rank 1 in every layer keeps "
                          f"({used / (budget / ratio):.4f} of the weights); raise it or convert fewer layers")
    gains = []
    for name, module in modules.items():
        power = spectra[name] ** 2
        share = (power / power.sum().clamp_min(torch.finfo(power.dtype).tiny)).tolist()
        gains += [(-share[j] / cost[name], name, j) for j in range(1, _useful_rank(module, kinds[name]))]
    for _, name, j in sorted(gains):  # per layer the gains fall with j, so ranks grow one at a time
        if j == ranks[name] and used + cost[name] <= budget:
            ranks[name] = j + 1
            used += cost[name]
    return ranks


@register(LowRank, "low_rank", rebuild=rebuild_factored, check=check_factored, structural=True,
          repair=repair_batchnorm, verb=low_rank_)
def _low_rank(model: nn.Module, config: LowRank) -> dict:
    def obstacle(name: str, module: nn.Module) -> str | None:
        kind = kind_of(module, config)
        reason = structure_obstacle(model, name, module, kind)
        if reason is None and config.rank is not None:
            reason = rank_obstacle(module, kind, config.rank)
        return reason

    chosen, skipped = candidates(model, (nn.Linear, nn.Conv2d), config.layers, config.filter_fn, obstacle)
    kinds = {n: kind_of(m, config) for n, m in chosen.items()}
    if config.rank is not None:
        ranks = dict.fromkeys(chosen, config.rank)
    else:
        spectra = {n: singular_values(m.weight, kinds[n]) for n, m in chosen.items()}
        if config.energy is not None:
            ranks = {n: energy_rank(spectra[n], config.energy) for n in chosen}
    plans = {}
    for name, module in chosen.items():
        if _useful_rank(module, kinds[name]) < 1:
            skipped[name] = "no factorization of this layer has fewer weights than the layer itself"
        elif config.param_ratio is None and ranks[name] > _useful_rank(module, kinds[name]):
            skipped[name] = (f"rank {ranks[name]} keeps no fewer weights than the dense layer "
                             f"(fewer only up to rank {_useful_rank(module, kinds[name])})")
        else:
            plans[name] = None
    if config.param_ratio is not None and plans:
        kept = {n: chosen[n] for n in plans}
        ranks = budget_ranks(kept, kinds, {n: spectra[n] for n in kept}, config.param_ratio)
    if not plans:
        raise nothing_to_convert(model, "low_rank_", skipped, "Linear or Conv2d")
    plans = {n: (kinds[n], ranks[n]) for n in plans}
    return {"layers": replace_layers(model, chosen, plans), "skipped": skipped}
