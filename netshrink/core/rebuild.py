"""Replay a transform log onto a freshly built model so its structure matches a saved file.

A .nsk file stores the zoo architecture (name + kwargs) and the transform log. Each technique's
registration (``core.registry.register``) names its rebuilder: the structural part of its change,
redone from the log record alone, or ``None`` for techniques that only change values (masks baked
in, clustering, quantization), and its record check. The loader refuses a log with a name nobody
registered (this netshrink cannot rebuild the file's model), and each record its technique's
handler would have refused, checked against the model as the records before it left it and before
its own rebuilder allocates anything.

The replay of a file's log is also metered (``Budget``, ``metered``): every parameter and buffer
any step registers is counted as it is registered, with its bytes, the records a later record
replaces included, and so is every module; the replay is refused as soon as the sum over all its
steps passes the file's budget. The loader first replays on the ``meta`` device, where a tensor
costs no memory, and refuses there, before the real replay allocates anything. (Registrations are
what a rebuilder allocates: a new layer registers its weights, a resized one its new weights. A
``TorchDispatchMode`` would see every op too, but entering one imports ``torch._dynamo``: seconds.)
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from netshrink.core.errors import NetshrinkFormatError
from netshrink.core.registry import Technique, registered_verbs, technique_of


@dataclasses.dataclass(frozen=True)
class Budget:
    """What building a file's model and replaying its log may do, summed over every step: the bytes
    of the parameters and buffers registered (on the meta device too: what the real build would
    allocate), and the modules, parameters and buffers registered."""

    bytes: int
    registrations: int


class _Meter:
    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.allocated = 0
        self.registered = 0

    def module(self, *_: Any) -> None:
        self._count(0)

    def tensor(self, module: nn.Module, name: str, tensor: torch.Tensor | None) -> None:
        self._count(0 if tensor is None else tensor.numel() * tensor.element_size())

    def _count(self, nbytes: int) -> None:
        self.registered += 1
        self.allocated += nbytes
        if self.allocated > self.budget.bytes:
            raise NetshrinkFormatError(f"rebuilding the file's model allocates more than its budget of "
                                       f"{self.budget.bytes} bytes")
        if self.registered > self.budget.registrations:
            raise NetshrinkFormatError(f"rebuilding the file's model registers more than its budget of "
                                       f"{self.budget.registrations} modules, parameters and buffers")


@contextlib.contextmanager
def metered(budget: Budget | None) -> Iterator[None]:
    """Within the block, refuse (``NetshrinkFormatError``) once the bytes of the parameters and
    buffers registered, or the modules, parameters and buffers registered, pass ``budget`` (None:
    no bound). The hooks are torch's global registration hooks."""
    if budget is None:
        yield
        return
    meter = _Meter(budget)
    hooks = nn.modules.module
    handles = [hooks.register_module_module_registration_hook(meter.module),
               hooks.register_module_parameter_registration_hook(meter.tensor),
               hooks.register_module_buffer_registration_hook(meter.tensor)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


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


def replay(model: nn.Module, log: list[dict[str, Any]], budget: Budget | None = None) -> nn.Module:
    """Check and apply every record's rebuilder in order. All names are checked first, so an unknown
    one leaves the model untouched; each record is checked against the model before its rebuilder
    runs; with a ``budget``, the whole replay is ``metered``. Returns the model."""
    check_log(log)
    with metered(budget):
        for position, record in enumerate(log):
            technique = _technique(position, record)
            try:
                technique.check_record(model, record)
            except NetshrinkFormatError as error:
                raise NetshrinkFormatError(f"transform log record {position}: {error}") from None
            if technique.rebuild is not None:
                technique.rebuild(model, record)
    return model


def meta_shadow(model: nn.Module) -> nn.Module | None:
    """A copy of ``model`` whose parameters and buffers live on the ``meta`` device (no memory), to
    replay a file's log on before replaying it on ``model`` itself; None when the model cannot be
    deep-copied (the real replay is then metered alone)."""
    memo: dict[int, Any] = {}
    for tensor in [*model.parameters(), *model.buffers()]:
        shadow = torch.empty_like(tensor, device="meta")
        memo[id(tensor)] = nn.Parameter(shadow, tensor.requires_grad) if isinstance(tensor, nn.Parameter) else shadow
    try:
        return copy.deepcopy(model, memo)
    except Exception:  # noqa: BLE001 (a user's module may hold something deepcopy refuses)
        return None
