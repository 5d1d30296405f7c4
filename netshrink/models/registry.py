"""Model zoo registry: ``create(name, **kwargs)`` and ``list_models()`` (after timm's _registry).

A registered model is rebuildable from its name and kwargs alone: ``create`` records both on the
model (``netshrink_arch``) and the .nsk container relies on that to rebuild the architecture.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from netshrink.core.errors import ConfigError
from netshrink.core.transform_log import set_arch

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: register a builder under its function name. Kwargs must be JSON-serialisable."""
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    """Names of every registered model."""
    return sorted(_MODELS)


def create(name: str, **kwargs: Any) -> nn.Module:
    """Build a zoo model by name; the name and kwargs are recorded on it for rebuilding."""
    builder = _MODELS.get(name)
    if builder is None:
        raise ConfigError(f"unknown model {name!r}; choose one of {list_models()}")
    params = inspect.signature(builder).parameters
    unknown = set(kwargs) - set(params)
    if unknown:
        raise ConfigError(f"model {name!r} takes no argument(s) {sorted(unknown)}; it takes {sorted(params)}")
    model = builder(**kwargs)
    set_arch(model, name, {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()})
    return model
