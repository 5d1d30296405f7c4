"""Replay a transform log onto a freshly built model so its structure matches a saved file.

A .nsk file stores the zoo architecture (name + kwargs) and the transform log. Each technique's
registration (``core.registry.register``) names its rebuilder: the structural part of its change,
redone from the log record alone, or ``None`` for techniques that only change values (masks baked
in, clustering, quantization), and its record check. The loader refuses a log with a name nobody
registered (this netshrink cannot rebuild the file's model), and each record its technique's
handler would have refused, checked against the model as the records before it left it and before
its own rebuilder allocates anything.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from netshrink.core.errors import NetshrinkFormatError
from netshrink.core.registry import Technique, registered_verbs, technique_of


def _technique(position: int, record: Any) -> Technique:
    if not isinstance(record, dict):
        raise NetshrinkFormatError(f"transform log record {position} is not an object")
    name = record.get("verb")
    technique = technique_of(name) if isinstance(name, str) else None
    if technique is None or technique.name != name:
        raise NetshrinkFormatError(
            f"transform log record {position} has unknown verb {str(name)[:40]!r}; this netshrink "
            f"can replay {registered_verbs()} (install the package that defines it, or upgrade)"
        )
    return technique


def check_log(log: Any) -> None:
    """Raise NetshrinkFormatError unless ``log`` is a list of records whose techniques are registered."""
    if not isinstance(log, list):
        raise NetshrinkFormatError(f"transform log must be a list, got {type(log).__name__}")
    for position, record in enumerate(log):
        _technique(position, record)


def replay(model: nn.Module, log: list[dict[str, Any]]) -> nn.Module:
    """Check and apply every record's rebuilder in order. All names are checked first, so an unknown
    one leaves the model untouched; each record is checked against the model before its rebuilder
    runs. Returns the model."""
    check_log(log)
    for position, record in enumerate(log):
        technique = _technique(position, record)
        try:
            technique.check_record(model, record)
        except NetshrinkFormatError as error:
            raise NetshrinkFormatError(f"transform log record {position}: {error}") from None
        if technique.rebuild is not None:
            technique.rebuild(model, record)
    return model
