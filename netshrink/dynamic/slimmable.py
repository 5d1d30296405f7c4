"""Slimmable networks (Yu et al. 2019): one set of weights, run at several widths.

A slimmable Linear or Conv2d keeps its full weight and, at width ``w``, uses its first
``round(w * out)`` output units and as many input units as its input has (the previous slimmed
layer's), so every width shares the widest one's weights (sec. 3.1). BatchNorm cannot be shared:
the statistics of a layer differ with the number of channels feeding it, so each width has its own
(switchable batch normalization, sec. 3.2; here private statistics with a shared affine, see
``SwitchableBatchNorm``). The last weighted layer keeps its full output (the
classes). ``set_width(model, w)`` switches every layer at once.

Supported: models whose parameters all live in Linear, Conv2d (``groups=1``) and BatchNorm layers,
connected so that each layer's input comes from the layer before (chains, flatten into Linear,
residual adds of equal widths): LeNets, the zoo convnet, plain MLPs. Refused in one line: grouped /
depthwise convolutions, parameters in any other layer (attention, LayerNorm, embeddings, free
tensors).

Widths are a structural change: the log record names the widths and the rebuilder converts a
fresh model the same way, so a .nsk file keeps every width's BatchNorm.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from netshrink.core import record_checks
from netshrink.core.config import Config
from netshrink.core.errors import ConfigError
from netshrink.core.registry import apply_, register
from netshrink.dynamic.training import WIDTHS

WIDTHS_ATTR = "netshrink_widths"


def check_width(value: Any, what: str = "width") -> float:
    """``value`` as a float in (0, 1], else a one-line ConfigError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) <= 1.0:
        raise ConfigError(f"{what} must be a fraction of the full width in (0, 1], got {value!r}")
    return float(value)


def units_at(full: int, width: float) -> int:
    """Active units of a layer with ``full`` units at ``width`` (at least one)."""
    return max(1, int(round(full * width)))


@dataclasses.dataclass(frozen=True)
class Slimmable(Config):
    """Make a model slimmable at the given widths.

    Args:
        widths: fractions of the full width in (0, 1]; must include 1.0 (the full network, the
            teacher of in-place distillation).

    Example:
        >>> slimmable_(create("convnet"), Slimmable(widths=(0.25, 0.5, 0.75, 1.0))); set_width(model, 0.5)
    """

    widths: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)

    def __post_init__(self) -> None:
        if not self.widths:
            raise ConfigError("Slimmable.widths must name at least one width")
        checked = [check_width(w) for w in self.widths]
        if 1.0 not in checked:
            raise ConfigError(f"Slimmable.widths must include 1.0 (the full network), got {list(self.widths)}")
        if len(set(checked)) != len(checked):
            raise ConfigError(f"Slimmable.widths has a width twice: {list(self.widths)}")


class _Slim:
    """Width state shared by the slimmable layers: ``width`` and whether the output is slimmed."""

    width: float = 1.0
    slim_out: bool = True

    def active_out(self, full: int) -> int:
        return units_at(full, self.width) if self.slim_out else full


class SlimmableLinear(_Slim, nn.Linear):
    """nn.Linear using its first ``in`` input columns (as many as the input has) and first
    ``round(width * out)`` rows."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = self.active_out(self.out_features)
        bias = self.bias[:rows] if self.bias is not None else None
        return F.linear(x, self.weight[:rows, :x.shape[-1]], bias)


class SlimmableConv2d(_Slim, nn.Conv2d):
    """nn.Conv2d (``groups=1``) using its first input channels (as many as the input has) and
    first ``round(width * out)`` filters."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        filters = self.active_out(self.out_channels)
        bias = self.bias[:filters] if self.bias is not None else None
        return self._conv_forward(x, self.weight[:filters, :x.shape[1]], bias)


class SwitchableBatchNorm(nn.Module):
    """Batch normalization with private statistics per width (Yu et al. 2019 sec. 3.2: the mean
    and variance a layer sees change with the channels feeding it) and the affine scale and shift
    shared, sliced like the convolutions' weights. Sharing the affine (as Universally Slimmable
    Networks do, Yu & Huang 2019 sec. 3.2) keeps one set of parameters that every width trains;
    the statistics are what must differ."""

    def __init__(self, full: nn.modules.batchnorm._BatchNorm, widths: Sequence[float]) -> None:
        super().__init__()
        self.widths = tuple(widths)
        self.width = 1.0
        self.weight, self.bias = full.weight, full.bias  # the same Parameters (or None)
        self.eps, self.momentum = full.eps, full.momentum
        kind = type(full)
        self.stats = nn.ModuleList(
            kind(units_at(full.num_features, w), full.eps, full.momentum, affine=False,
                 track_running_stats=full.track_running_stats) for w in self.widths)
        if full.track_running_stats:
            with torch.no_grad():  # every width starts from the full layer's statistics
                for stats in self.stats:
                    stats.running_mean.copy_(full.running_mean[:stats.num_features])
                    stats.running_var.copy_(full.running_var[:stats.num_features])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stats = self.stats[self.widths.index(self.width)]
        n = stats.num_features
        normalized = stats(x)  # (B, n, ...) with this width's statistics, no affine
        if self.weight is None:
            return normalized
        shape = (1, n) + (1,) * (x.dim() - 2)
        return normalized * self.weight[:n].view(shape) + self.bias[:n].view(shape)


def _check_supported(model: nn.Module) -> None:
    for name, module in model.named_modules():
        if parametrize.is_parametrized(module):
            raise ConfigError(f"{name or 'the model'} has parametrizations; finalize_ the model before slimmable_")
        if isinstance(module, nn.Conv2d) and module.groups != 1:
            raise ConfigError(f"{name} is a grouped/depthwise convolution (groups={module.groups}); slimmable "
                              "widths support groups=1 only")
        own = [p for p, _ in module.named_parameters(recurse=False)]
        if own and not isinstance(module, (nn.Linear, nn.Conv2d, nn.modules.batchnorm._BatchNorm)):
            where = f"{name}.{own[0]}" if name else own[0]
            raise ConfigError(f"{type(model).__name__} has parameter {where} outside Linear/Conv2d/BatchNorm "
                              "layers; slimmable widths support only those")


def make_slimmable(model: nn.Module, widths: Sequence[float]) -> nn.Module:
    """Convert ``model`` in place (no log record: ``slimmable_`` logs it; a zoo builder such as
    ``slimmable_convnet`` calls this directly). Linear/Conv2d keep their Parameters (their class
    changes), BatchNorm layers become ``SwitchableBatchNorm``; the model is left at width 1."""
    if getattr(model, WIDTHS_ATTR, None) is not None:
        raise ConfigError(f"{type(model).__name__} is already slimmable")
    if getattr(model, "netshrink_exits", None) is not None:
        raise ConfigError("this model has early exits; early exits and slimmable widths do not combine yet")
    _check_supported(model)
    widths = tuple(sorted(check_width(w) for w in widths))
    weighted = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    if not weighted:
        raise ConfigError(f"{type(model).__name__} has no Linear or Conv2d layer to slim")
    for name, module in weighted:
        module.__class__ = SlimmableLinear if isinstance(module, nn.Linear) else SlimmableConv2d
        module.slim_out = name != weighted[-1][0]
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            parent, _, child = name.rpartition(".")
            switchable = SwitchableBatchNorm(module, widths).train(module.training)
            setattr(model.get_submodule(parent) if parent else model, child, switchable)
    object.__setattr__(model, WIDTHS_ATTR, widths)
    return model


def _rebuild(model: nn.Module, record: dict[str, Any]) -> None:
    make_slimmable(model, Slimmable.from_dict(record["config"]).widths)


def slimmable_(model: nn.Module, config: Slimmable) -> nn.Module:
    """Make ``model`` slimmable at ``config.widths``, in place (logged); returns the model."""
    return apply_(model, config)


def _check(model: nn.Module, record: dict[str, Any]) -> None:
    """Once per model, and not on a model with early exits (as the handler refuses)."""
    record_checks.not_yet(model, WIDTHS_ATTR, "slimmable")
    record_checks.not_yet(model, "netshrink_exits", "slimmable on a model with early exits")
    _check_supported(model)


@register(Slimmable, "slimmable", rebuild=_rebuild, check=_check, structural=True, training=WIDTHS,
          verb=slimmable_)
def _slimmable(model: nn.Module, config: Slimmable) -> dict[str, Any]:
    device = next(model.parameters()).device
    make_slimmable(model, config.widths)
    model.to(device)
    return {"layers": [n for n, m in model.named_modules() if isinstance(m, _Slim)]}


def widths_of(model: nn.Module) -> tuple[float, ...]:
    """The widths the model was made slimmable at; a one-line ConfigError for a plain model."""
    widths = getattr(model, WIDTHS_ATTR, None)
    if widths is None:
        raise ConfigError(f"{type(model).__name__} is not slimmable; convert it with slimmable_(model, "
                          "Slimmable(widths=...)) or build slimmable_convnet")
    return widths


def set_width(model: nn.Module, width: float) -> None:
    """Run every slimmable layer at ``width`` (one of the widths the model was made for)."""
    widths = widths_of(model)
    width = check_width(width)
    if width not in widths:
        raise ConfigError(f"width {width} was not trained (it has no BatchNorm); choose one of {list(widths)}")
    for module in model.modules():
        if isinstance(module, (_Slim, SwitchableBatchNorm)):
            module.width = width


def get_width(model: nn.Module) -> float:
    """The width the model runs at."""
    widths_of(model)
    return next(m.width for m in model.modules() if isinstance(m, _Slim))
