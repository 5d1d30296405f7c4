"""Which layers a technique acts on: one selector for every family.

A technique acts on layers of some kinds (pruning: Linear, Conv and attention in-projections;
quantization adds Embedding; a conversion only the types it can rebuild). ``select`` picks among
them: the layers named in ``layers`` (each must exist and be of those kinds), else those
``filter_fn(module, name)`` accepts, else all of them; always in model order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from netshrink.core.errors import ConfigError

LayerFilter = Callable[[nn.Module, str], bool]
"""``filter_fn(module, name) -> bool``: which of a technique's layers it acts on (not logged)."""

WEIGHTED_LAYERS: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
"""The default kinds: the layers compression acts on."""

_SHOWN = 12  # available layers listed in an error


def weight_name(module: nn.Module) -> str:
    """The name of the weight tensor a technique changes in ``module``: ``in_proj_weight`` for
    ``nn.MultiheadAttention`` (its packed q/k/v projection; the output projection is a Linear of
    its own), else ``weight``."""
    return "in_proj_weight" if isinstance(module, nn.MultiheadAttention) else "weight"


def check_layer_names(layers: Any, option: str = "layers") -> None:
    """A config's ``layers`` is None or a non-empty list of names (checked when the config is made)."""
    if layers is not None and (isinstance(layers, str) or not layers or not all(isinstance(n, str) for n in layers)):
        raise ConfigError(f"{option} must be a non-empty list of layer names, e.g. ('features.0.0',)")


def _has_weight(module: nn.Module) -> bool:
    """An ``nn.MultiheadAttention`` with separate q/k/v projections has no packed weight."""
    return isinstance(getattr(module, weight_name(module), None), torch.Tensor)


def select(model: nn.Module, layers: Sequence[str] | None = None, filter_fn: LayerFilter | None = None, *,
           kinds: tuple[type[nn.Module], ...] = WEIGHTED_LAYERS,
           refuse_parametrized: bool = False) -> dict[str, nn.Module]:
    """``{qualified name: module}`` of the layers to act on, in model order.

    The candidates are the submodules of ``model`` that are instances of ``kinds`` and have their
    weight tensor (``weight_name``). Of these:

    - ``layers`` given: exactly those names (``filter_fn`` is not consulted). A name that is no
      submodule, or one that is not a candidate, is a one-line ConfigError listing the candidates.
    - else ``filter_fn`` given: the candidates it accepts (it narrows the kinds, never widens them).
    - else every candidate.

    ``refuse_parametrized``: a chosen layer carrying masks or other parametrizations is a
    ConfigError asking for ``finalize_`` first (conversions that replace the module need the
    plain weight).

    Example:
        >>> select(model, filter_fn=lambda m, n: isinstance(m, nn.Conv2d))
        {'features.0': Conv2d(1, 8, ...), ...}
    """
    modules = dict(model.named_modules())
    candidates = {n: m for n, m in modules.items() if isinstance(m, kinds) and _has_weight(m)}
    if layers is not None:
        _check_named(model, modules, candidates, layers, kinds)
        chosen = {n: m for n, m in candidates.items() if n in set(layers)}
    elif filter_fn is not None:
        chosen = {n: m for n, m in candidates.items() if filter_fn(m, n)}
    else:
        chosen = candidates
    if refuse_parametrized:
        carrying = [n for n, m in chosen.items() if parametrize.is_parametrized(m)]
        if carrying:
            raise ConfigError(f"layer {carrying[0]!r} carries masks or other parametrizations; call "
                              "finalize_(model) first")
    return chosen


def _check_named(model: nn.Module, modules: dict[str, nn.Module], candidates: dict[str, nn.Module],
                 layers: Sequence[str], kinds: tuple[type[nn.Module], ...]) -> None:
    kind_names = "/".join(k.__name__ for k in kinds)
    names = list(candidates)
    available = f"{names[:_SHOWN]}{' ...' if len(names) > _SHOWN else ''}"
    unknown = [n for n in layers if n not in modules]
    if unknown:
        raise ConfigError(f"unknown layer name(s) {unknown[:3]} in {type(model).__name__}; its {kind_names} "
                          f"layers are {available}")
    wrong = [n for n in layers if n not in candidates]
    if wrong:
        module = modules[wrong[0]]
        why = (f"is a {type(module).__name__}, not a {kind_names}" if not isinstance(module, kinds)
               else f"has no {weight_name(module)} tensor")
        raise ConfigError(f"layer {wrong[0]!r} {why}; choose among {available}")
