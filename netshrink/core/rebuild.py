"""Replay a transform log onto a freshly built model so its structure matches a saved file.

A .nsk file stores the zoo architecture (name + kwargs) and the transform log. Each verb's
registration (``core.registry.register``) names its rebuilder: the structural part of its change,
redone from the log record alone, or ``None`` for verbs that only change values (masks baked in,
clustering, quantization). The loader refuses a log with a verb nobody registered: an unknown verb
means this netshrink cannot rebuild the file's model.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from netshrink.core.errors import NetshrinkFormatError
from netshrink.core.registry import registered_verbs, technique_of


def check_log(log: Any) -> None:
    """Raise NetshrinkFormatError unless ``log`` is a list of records whose verbs are registered."""
    if not isinstance(log, list):
        raise NetshrinkFormatError(f"transform log must be a list, got {type(log).__name__}")
    for position, record in enumerate(log):
        if not isinstance(record, dict):
            raise NetshrinkFormatError(f"transform log record {position} is not an object")
        verb = record.get("verb")
        if not isinstance(verb, str) or technique_of(verb) is None:
            raise NetshrinkFormatError(
                f"transform log record {position} has unknown verb {str(verb)[:40]!r}; this netshrink "
                f"can replay {registered_verbs()} (import the module that defines it, or upgrade)"
            )


def replay(model: nn.Module, log: list[dict[str, Any]]) -> nn.Module:
    """Apply the registered rebuilder of every record in order; checks all verbs first, so an
    unknown verb leaves the model untouched. Returns the model."""
    check_log(log)
    for record in log:
        rebuild = technique_of(record["verb"]).rebuild
        if rebuild is not None:
            rebuild(model, record)
    return model
