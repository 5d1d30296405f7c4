"""Multiply-accumulates counted by torch's own ``torch.utils.flop_counter`` (dense MACs = FLOPs/2)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def _device_of(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


#: what ``count_macs`` counts for a model that leaves early by confidence (its cost depends on the input)
EVERY_EXIT = "every exit run, no sample leaving early: the most one sample costs"


def counted_path(model: nn.Module) -> str | None:
    """``EVERY_EXIT`` for a model whose count is of every exit (``_counted_forward``), else None
    (the count is of the one path the model runs)."""
    if getattr(model, "netshrink_exits", None) is None:
        return None
    from netshrink.dynamic.early_exit import leaves_by_confidence

    return EVERY_EXIT if leaves_by_confidence(model) else None


class _EveryExit(nn.Module):
    """Runs every stage and exit head of a model with early exits (``all_exit_logits``)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from netshrink.dynamic.early_exit import all_exit_logits

        return all_exit_logits(self.model, x)[-1]


def _counted_forward(model: nn.Module) -> nn.Module:
    """What one sample's count runs: the model, except for a model with early exits that leaves
    by confidence, whose cost depends on the input; counted for it is every stage and every exit
    head, no sample leaving early (the most one sample costs); its average cost per threshold on
    real data is in its profile (``netshrink.dynamic.profile``)."""
    return _EveryExit(model) if counted_path(model) is not None else model


def _own_name(key: str, names: set[str]) -> str | None:
    """The model's qualified name for the counter's ``key`` (its longest dotted suffix that names
    one of the model's modules), or None for the root and for wrappers that are not its modules."""
    parts = key.split(".")
    return next((".".join(parts[i:]) for i in range(1, len(parts)) if ".".join(parts[i:]) in names), None)


@torch.no_grad()
def count_macs_per_module(model: nn.Module, input_shape: Sequence[int]) -> dict[str, int]:
    """Dense MACs for one sample, per module qualified name (``""`` is the whole model).

    torch's counter names a module by the path it was first reached by, under the class name of
    the outermost module; a module reached through a wrapper that is not one of the model's modules
    (the ``torch.fx`` stages early exits run) is named under the wrapper. Each name is mapped back
    to the model's own qualified name and wrappers are left out, so each module's MACs are under
    its own name, once.
    """
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    try:
        with counter:
            _counted_forward(model)(torch.zeros(1, *input_shape, device=_device_of(model)))
    finally:
        model.train(was_training)
    names = {name for name, _ in model.named_modules() if name}
    per_module: dict[str, int] = {}
    for key, ops in counter.get_flop_counts().items():
        name = "" if key == "Global" else _own_name(key, names)
        if name is not None:
            per_module[name] = per_module.get(name, 0) + sum(ops.values()) // 2
    return per_module


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Dense MACs of one forward pass on one sample of ``input_shape`` (C, H, W)."""
    return count_macs_per_module(model, input_shape).get("", 0)
