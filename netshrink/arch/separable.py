"""``separable_``: turn trained k x k convolutions into depthwise separable ones, SVD-initialised.

A k x k Conv2d with I inputs and O outputs has k^2 I O weights. Its depthwise separable
replacement (Howard et al. 2017, "MobileNets", sec. 3.1) is a depthwise k x k convolution with
depth multiplier m (m filters per input channel) followed by a 1 x 1 pointwise convolution:
m k^2 I + m I O weights. For each input channel c the kernel slice W[:, c] (O x k^2) is replaced
by the sum of m outer products of a pointwise column and a depthwise filter, and the best such
sum in least squares is the rank-m truncated SVD of that slice; so the conversion starts from the
closest separable layer to the trained one instead of from scratch, and is exact when m equals
min(O, k^2). ``init="random"`` instead starts those layers from PyTorch's default initialisation
(for the comparison in benchmarks/architecture.py).
"""

from __future__ import annotations

import dataclasses

from torch import nn

from netshrink.arch.convert import (
    candidates,
    nothing_to_convert,
    rank_obstacle,
    replace_layers,
)
from netshrink.arch.structure import check_factored, rebuild_factored, repair_batchnorm
from netshrink.core.config import Config, unlogged
from netshrink.core.errors import ConfigError
from netshrink.core.registry import apply_, register
from netshrink.core.selection import LayerFilter, check_layer_names

INITS = ("svd", "random")


@dataclasses.dataclass(frozen=True)
class Separable(Config):
    """Convert k x k convolutions (groups 1, more than one input channel) to depthwise separable ones.

    Args:
        multiplier: depth multiplier m, the depthwise filters per input channel (the rank of each
            input channel's approximation), from 1 to min(O, k^2).
        init: ``"svd"`` (per-input-channel truncated SVD of the trained kernel) or ``"random"``.
        layers: convert only these Conv2d layers (``named_modules`` names); by default every one
            that can be converted and passes ``filter_fn``.
        filter_fn: ``filter_fn(module, name) -> bool`` on candidate layers (not logged).

    Example:
        >>> separable_(model, Separable(multiplier=1))  # 3x3 conv 64->64: 36,864 -> 4,672 weights
    """

    LAYER_FIELDS = ("layers",)

    multiplier: int = 1
    init: str = "svd"
    layers: tuple[str, ...] | None = None
    filter_fn: LayerFilter | None = unlogged()

    def __post_init__(self) -> None:
        if not isinstance(self.multiplier, int) or isinstance(self.multiplier, bool) or self.multiplier < 1:
            raise ConfigError(f"multiplier must be an integer >= 1, got {self.multiplier!r}")
        if self.init not in INITS:
            raise ConfigError(f"unknown init {self.init!r}; choose one of {list(INITS)}")
        check_layer_names(self.layers)


def separable_obstacle(module: nn.Conv2d) -> str | None:
    """Why a Conv2d cannot become depthwise separable, or None."""
    if module.groups != 1:
        return f"grouped convolution (groups={module.groups}); only groups=1 convolutions are converted"
    if module.in_channels == 1:
        return "one input channel: the convolution is already depthwise"
    if module.kernel_size == (1, 1):
        return "1x1 kernel: there is no spatial filter to separate"
    return None


def separable_(model: nn.Module, config: Separable) -> nn.Module:
    """Convert ``model``'s convolutions in place (see ``Separable``); logged, so save/load restore it."""
    return apply_(model, config)


@register(Separable, "separable", rebuild=rebuild_factored, check=check_factored, structural=True,
          repair=repair_batchnorm, verb=separable_)
def _separable(model: nn.Module, config: Separable) -> dict:
    def obstacle(name: str, module: nn.Module) -> str | None:
        return separable_obstacle(module) or rank_obstacle(module, "separable", config.multiplier, "multiplier")

    chosen, skipped = candidates(model, (nn.Conv2d,), config.layers, config.filter_fn, obstacle)
    if not chosen:
        raise nothing_to_convert(model, f"separable_ (multiplier {config.multiplier})", skipped, "Conv2d")
    plans = {name: ("separable", config.multiplier) for name in chosen}
    return {"layers": replace_layers(model, chosen, plans, config.init), "skipped": skipped}
