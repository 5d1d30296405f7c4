"""Model zoo registry: ``create(name, **kwargs)`` and ``list_models()`` (after timm's _registry).

A registered model is rebuildable from its name and kwargs alone: ``create`` records both on the
model (``netshrink_arch``) and the .nsk container relies on that to rebuild the architecture.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
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


def create_matching(name: str, kwargs: dict[str, Any], shapes: dict[str, tuple[int, ...]]) -> nn.Module:
    """Build a zoo model for stored weights, refusing one whose state dict would not match.

    Files name the architecture they were saved from; a damaged or hostile file could name kwargs
    that make a huge model. The model is first built on the ``meta`` device (no memory), its
    state-dict shapes compared with ``shapes``, and only then built for real. Raises ConfigError.
    """
    if not isinstance(kwargs, dict):
        raise ConfigError(f"model kwargs must be an object, got {type(kwargs).__name__}")
    try:
        with torch.device("meta"):
            probe = create(name, **kwargs)
    except ConfigError:
        raise
    except Exception as exc:  # a builder rejecting its kwargs (TypeError, ValueError, ...)
        raise ConfigError(f"model {name!r} cannot be built from {kwargs}: {type(exc).__name__}: {exc}") from None
    expected = {key: tuple(t.shape) for key, t in probe.state_dict().items()}
    found = {key: tuple(shape) for key, shape in shapes.items()}
    if expected != found:
        differing = sorted(k for k in expected.keys() | found.keys() if expected.get(k) != found.get(k))
        raise ConfigError(f"the stored weights do not fit {name}({kwargs}): tensors {differing[:5]} differ")
    return create(name, **kwargs)
