"""Hooks into ``fit()``: the one way a technique acts during training without a loop of its own.

Gradual pruning (Zhu & Gupta 2017) raises its sparsity every few optimizer steps; iterative schemes
act between epochs. A callback implements any of the methods below; ``fit`` calls them on every
rank, with the plain (unwrapped) model, in the order the callbacks were given. A callback must keep
its state in the model (buffers, parametrizations) or derive it from ``StepInfo`` alone, so that a
resumed run repeats it exactly.
"""

from __future__ import annotations

import dataclasses

from torch import nn


@dataclasses.dataclass(frozen=True)
class StepInfo:
    """Where training is: ``step`` optimizer steps done so far (0-based index of the next one),
    out of ``total_steps`` = ``epochs * steps_per_epoch``; ``epoch`` is 1-based."""

    epoch: int
    step: int
    steps_per_epoch: int
    total_steps: int


class Callback:
    """Base class: every method is optional and does nothing by default."""

    def on_step_begin(self, model: nn.Module, info: StepInfo) -> None:
        """Before the forward pass of optimizer step ``info.step``."""

    def on_step_end(self, model: nn.Module, info: StepInfo) -> None:
        """After ``optimizer.step()`` of step ``info.step``."""

    def on_epoch_end(self, model: nn.Module, info: StepInfo) -> None:
        """After epoch ``info.epoch``'s training steps, before its evaluation and checkpoint."""
