"""Replay a transform log onto a freshly built model so its structure matches a saved file.

A .nsk file stores the zoo architecture (name + kwargs) and the transform log. Verbs that change
structure (removed channels, factorised layers, replaced blocks) register a *rebuilder* that redoes
the structural part of their change from the log record alone; verbs that only change values
(pruning masks baked in, clustering, quantization) register ``None``. The loader refuses a log with
a verb nobody registered: an unknown verb means this netshrink cannot rebuild the file's model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from netshrink.core.errors import NetshrinkFormatError

Rebuilder = Callable[[nn.Module, dict[str, Any]], None]
_REBUILDERS: dict[str, Rebuilder | None] = {}


def register_rebuilder(verb: str, fn: Rebuilder | None) -> None:
    """Register how to redo ``verb``'s structural change: ``fn(model, record)`` edits the model in
    place; ``None`` declares that the verb needs no rebuilding (its effect is in the weights)."""
    if not isinstance(verb, str) or not verb:
        raise ValueError(f"verb must be a non-empty string, got {verb!r}")
    _REBUILDERS[verb] = fn


def registered_verbs() -> list[str]:
    """Every verb the loader can replay."""
    return sorted(_REBUILDERS)


def check_log(log: Any) -> None:
    """Raise NetshrinkFormatError unless ``log`` is a list of records whose verbs are registered."""
    if not isinstance(log, list):
        raise NetshrinkFormatError(f"transform log must be a list, got {type(log).__name__}")
    for position, record in enumerate(log):
        if not isinstance(record, dict):
            raise NetshrinkFormatError(f"transform log record {position} is not an object")
        verb = record.get("verb")
        if not isinstance(verb, str) or verb not in _REBUILDERS:
            raise NetshrinkFormatError(
                f"transform log record {position} has unknown verb {verb!r}; this netshrink can "
                f"replay {registered_verbs()} (import the module that defines it, or upgrade)"
            )


def replay(model: nn.Module, log: list[dict[str, Any]]) -> nn.Module:
    """Apply the registered rebuilder of every record in order; checks all verbs first, so an
    unknown verb leaves the model untouched. Returns the model."""
    check_log(log)
    for record in log:
        rebuilder = _REBUILDERS[record["verb"]]
        if rebuilder is not None:
            rebuilder(model, record)
    return model
