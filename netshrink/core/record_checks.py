"""Checks a technique's ``check`` runs on a log record from a file, before its rebuilder allocates.

Each raises ``NetshrinkFormatError`` with a one-line reason; none allocates a tensor. A record is
refused exactly where the technique's handler would have refused to write it for the model as the
earlier records left it: a layer it could not have touched, a size that grows a layer, a rank above
a layer's rank, a technique applied twice where it cannot be.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn

from netshrink.core.errors import NetshrinkFormatError


def layer(model: nn.Module, name: Any, types: tuple[type, ...] = (nn.Module,)) -> nn.Module:
    """The submodule ``name`` of ``model``, which must exist and be one of ``types``."""
    if not isinstance(name, str) or not name:
        raise NetshrinkFormatError(f"layer name must be a non-empty string, got {str(name)[:40]!r}")
    try:
        module = model.get_submodule(name)
    except AttributeError:
        raise NetshrinkFormatError(f"names layer {name[:80]!r}, which the model does not have") from None
    if not isinstance(module, types):
        raise NetshrinkFormatError(f"layer {name[:80]!r} is a {type(module).__name__}, not one of "
                                   f"{', '.join(t.__name__ for t in types)}")
    return module


def layers(model: nn.Module, names: Any, types: tuple[type, ...] = (nn.Module,)) -> None:
    """Every name in ``names`` (a list, or the keys of an object) is such a layer."""
    if not isinstance(names, (list, dict)):
        raise NetshrinkFormatError(f"layers must be a list or an object, got {type(names).__name__}")
    for name in names:
        layer(model, name, types)


def size(value: Any, largest: int, what: str) -> int:
    """An integer from 1 to ``largest`` (a logged size never grows what it sizes)."""
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= largest:
        raise NetshrinkFormatError(f"{what} must be an integer from 1 to {largest}, got {str(value)[:40]!r}")
    return value


def mapping(value: Any, what: str) -> dict[str, Any]:
    """``value``, which must be a JSON object."""
    if not isinstance(value, dict):
        raise NetshrinkFormatError(f"{what} must be an object, got {type(value).__name__}")
    return value


def one_of(value: Any, allowed: Iterable[Any], what: str) -> Any:
    allowed = tuple(allowed)
    if value not in allowed:
        raise NetshrinkFormatError(f"{what} must be one of {list(allowed)}, got {str(value)[:40]!r}")
    return value


def not_yet(model: nn.Module, attribute: str, technique: str) -> None:
    """Refuse a second application of a technique that cannot be applied twice."""
    if getattr(model, attribute, None) is not None:
        raise NetshrinkFormatError(f"{technique} is applied twice; the model already has it")
