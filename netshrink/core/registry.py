"""One registry of techniques: config type, verb, handler and rebuilder, registered together.

Modelled on torchao's ``register_quantize_module_handler``: a new technique is one config plus one
function. ``apply_(model, config)`` looks up the technique of ``type(config)``, runs its handler and
records what it did in the model's transform log. The same registration says how ``load`` redoes
the technique's structural change from a log record (``rebuild``; ``None`` when the effect is in
the weights alone) and, optionally, what ``finalize_`` must do for it (``finalize``). Because the
three travel together, a technique cannot be applied and saved yet be unloadable.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any

from torch import nn

from netshrink.core.config import Config
from netshrink.core.errors import ConfigError
from netshrink.core.transform_log import append_record

Handler = Callable[[nn.Module, Config], dict[str, Any] | None]
"""``handler(model, config) -> details``: edits the model in place; the details (targets, new
shapes...) go into the log record beside the config."""
Rebuilder = Callable[[nn.Module, dict[str, Any]], None]
"""``rebuild(model, record)``: redo the structural part of a logged change on a fresh model."""
Finalizer = Callable[[nn.Module], None]
"""``finalize(model)``: the technique's part of ``finalize_`` (physical surgery), run before the
generic baking of parametrizations; structural surgery it does must itself go through ``apply_``
so the log records it."""


@dataclasses.dataclass(frozen=True)
class Technique:
    """Everything netshrink knows about one verb."""

    config_type: type[Config]
    verb: str
    handler: Handler
    rebuild: Rebuilder | None
    finalize: Finalizer | None = None


_BY_CONFIG: dict[type[Config], Technique] = {}
_BY_VERB: dict[str, Technique] = {}

#: The modules that register netshrink's own techniques. A verb looked up and not found makes the
#: registry import these (this fixed list, never a name read from a file) once, so a fresh process
#: loads any file netshrink wrote without first importing the family that wrote it.
#: ``tests/core/test_registry_builtins.py`` checks that every registering module is listed.
BUILTIN_TECHNIQUE_MODULES = (
    "netshrink.codec.container",
    "netshrink.prune.magnitude",
    "netshrink.prune.structured",
    "netshrink.quant.cluster",
    "netshrink.quant.binary",
    "netshrink.quant.uniform",
    "netshrink.arch.separable",
    "netshrink.arch.low_rank",
    "netshrink.dynamic.slimmable",
    "netshrink.dynamic.profile",
    "netshrink.dynamic.early_exit",
)
_builtins_imported = False


def _import_builtins() -> None:
    global _builtins_imported
    if not _builtins_imported:
        _builtins_imported = True
        for module in BUILTIN_TECHNIQUE_MODULES:
            importlib.import_module(module)


def register(config_type: type[Config], verb: str, *, rebuild: Rebuilder | None,
             finalize: Finalizer | None = None) -> Callable[[Handler], Handler]:
    """Decorator registering ``handler(model, config)`` as the technique for ``config_type``.

    Args:
        config_type: the config class the handler takes.
        verb: the name the transform log records (unique).
        rebuild: how ``load`` redoes the structural change from the log record, or ``None`` when
            the technique changes values only. Required: there is no default to forget.
        finalize: the technique's part of ``finalize_``, if it has one.

    Example:
        >>> @register(MagnitudePrune, "prune", rebuild=None, finalize=None)
        ... def _prune(model, config): ...
    """
    if not isinstance(verb, str) or not verb:
        raise ValueError(f"verb must be a non-empty string, got {verb!r}")

    def wrap(handler: Handler) -> Handler:
        if config_type in _BY_CONFIG:
            raise ValueError(f"a technique for {config_type.__name__} is already registered")
        if verb in _BY_VERB:
            raise ValueError(f"verb {verb!r} is already registered (by {_BY_VERB[verb].config_type.__name__})")
        technique = Technique(config_type, verb, handler, rebuild, finalize)
        _BY_CONFIG[config_type] = technique
        _BY_VERB[verb] = technique
        return handler

    return wrap


def apply_(model: nn.Module, config: Config) -> nn.Module:
    """Run the registered technique for ``config`` on ``model`` in place; log it; return model."""
    technique = _BY_CONFIG.get(type(config))
    if technique is None:
        raise ConfigError(
            f"no transform is registered for {type(config).__name__}; "
            f"registered: {sorted(c.__name__ for c in _BY_CONFIG)}"
        )
    from netshrink.measure.size import remember_original_size  # measure imports core

    remember_original_size(model)  # the compression-rate baseline, before anything changes
    details = technique.handler(model, config) or {}
    append_record(model, technique.verb, config, **details)
    return model


def technique_of(verb: str) -> Technique | None:
    """The technique registered under ``verb`` (netshrink's own are imported on first need), or None."""
    if verb not in _BY_VERB:
        _import_builtins()
    return _BY_VERB.get(verb)


def registered() -> dict[str, str]:
    """Config name -> verb, for every registered technique."""
    return {c.__name__: t.verb for c, t in _BY_CONFIG.items()}


def registered_verbs() -> list[str]:
    """Every verb the loader can replay."""
    _import_builtins()
    return sorted(_BY_VERB)
