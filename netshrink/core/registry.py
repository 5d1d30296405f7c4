"""One registry from config type to handler: a new technique is one config plus one function.

Modelled on torchao's ``register_quantize_module_handler``. ``apply_(model, config)`` looks up the
handler for ``type(config)``, runs it, and records what it did in the model's transform log.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from netshrink.core.config import Config
from netshrink.core.errors import ConfigError
from netshrink.core.transform_log import append_record

Handler = Callable[[nn.Module, Config], dict]
_HANDLERS: dict[type[Config], tuple[str, Handler]] = {}


def register(config_type: type[Config], verb: str) -> Callable[[Handler], Handler]:
    """Decorator: ``@register(MagnitudePrune, "prune")`` makes ``handler(model, config)`` the
    transform for that config. The handler returns a dict of details for the log (e.g. targets)."""

    def wrap(handler: Handler) -> Handler:
        if config_type in _HANDLERS:
            raise ValueError(f"a handler for {config_type.__name__} is already registered")
        _HANDLERS[config_type] = (verb, handler)
        return handler

    return wrap


def apply_(model: nn.Module, config: Config) -> nn.Module:
    """Run the registered transform for ``config`` on ``model`` in place; log it; return model."""
    entry = _HANDLERS.get(type(config))
    if entry is None:
        raise ConfigError(
            f"no transform is registered for {type(config).__name__}; "
            f"registered: {sorted(c.__name__ for c in _HANDLERS)}"
        )
    verb, handler = entry
    details = handler(model, config) or {}
    append_record(model, verb, config, **details)
    return model


def registered() -> dict[str, str]:
    """Config name -> verb, for every registered transform."""
    return {c.__name__: verb for c, (verb, _) in _HANDLERS.items()}
