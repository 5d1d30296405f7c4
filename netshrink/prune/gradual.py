"""Gradual magnitude pruning during ``fit()`` (Zhu & Gupta 2017, "To prune, or not to prune", sec. 3).

Sparsity rises from ``s_i`` to ``s_f`` over ``n`` pruning steps ``dt`` optimizer steps apart,
starting at step ``t0``:

    s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt)) ** 3,   t = t0, t0 + dt, ..., t0 + n * dt

so the network loses many weights early, while they are redundant, and few near the end. Each
pruning step is a ``MagnitudePrune`` through ``apply_`` (logged); between them the masks hold
the pruned weights at zero while training goes on. The schedule depends on ``StepInfo`` alone, so
a resumed ``fit`` (masks restored from its checkpoint) prunes exactly like an uninterrupted one,
provided both runs called ``prepare`` before ``fit``.
"""

from __future__ import annotations

from torch import nn

from netshrink.core.errors import ConfigError
from netshrink.core.selection import LayerFilter
from netshrink.prune.magnitude import MagnitudePrune, prune_
from netshrink.prune.selection import check_sparsity
from netshrink.train.callbacks import Callback, StepInfo


def cubic_sparsity(step: int, final: float, initial: float, start: int, end: int, every: int) -> float | None:
    """Zhu & Gupta's target sparsity at optimizer ``step``, or None when ``step`` is not a pruning
    step (they are ``start, start + every, ...`` up to ``end``; ``end`` itself always is)."""
    if step < start or step > end or ((step - start) % every and step != end):
        return None
    progress = min(1.0, (step - start) / max(1, end - start))
    return final + (initial - final) * (1.0 - progress) ** 3


class GradualPrune(Callback):
    """Prune by magnitude on Zhu & Gupta's cubic schedule while ``fit()`` trains.

    Args:
        sparsity: final sparsity ``s_f`` in [0, 1).
        initial_sparsity: ``s_i`` at the first pruning step.
        start: first pruning step ``t0`` as a fraction of the run's optimizer steps.
        end: last pruning step as a fraction (the rest of the run fine-tunes at ``s_f``).
        every: optimizer steps ``dt`` between pruning steps.
        scope, layers, filter_fn: as in ``MagnitudePrune``.

    Example:
        >>> fit(model, data, FitConfig(epochs=10), callbacks=[GradualPrune(sparsity=0.9)])
    """

    def __init__(self, sparsity: float, initial_sparsity: float = 0.0, start: float = 0.0, end: float = 0.7,
                 every: int = 100, scope: str = "global", layers: tuple[str, ...] | None = None,
                 filter_fn: LayerFilter | None = None) -> None:
        self.final = check_sparsity(sparsity)
        self.initial = check_sparsity(initial_sparsity, "initial_sparsity")
        if not 0.0 <= start <= end <= 1.0:
            raise ConfigError(f"need 0 <= start <= end <= 1 (fractions of the run), got start={start}, end={end}")
        if not isinstance(every, int) or every < 1:
            raise ConfigError(f"every must be a positive number of optimizer steps, got {every!r}")
        self.start, self.end, self.every = start, end, every
        MagnitudePrune(sparsity=self.final, scope=scope, layers=layers)  # checks scope and layers now
        self.scope, self.layers, self.filter_fn = scope, layers, filter_fn

    def prepare(self, model: nn.Module) -> nn.Module:
        """Prune to ``initial_sparsity`` now, before ``fit`` builds its optimizer, so the model's
        parameters (and so the optimizer state in checkpoints) have their final layout from the
        start. Needed for ``fit(..., resume=True)``: call it on the fresh model of every run."""
        return prune_(model, MagnitudePrune(sparsity=self.initial, scope=self.scope, layers=self.layers,
                                            filter_fn=self.filter_fn))

    def sparsity_at(self, info: StepInfo) -> float | None:
        """The sparsity to prune to before optimizer step ``info.step``, or None (no pruning step)."""
        start = round(self.start * info.total_steps)
        end = max(start, round(self.end * info.total_steps) - 1)
        return cubic_sparsity(info.step, self.final, self.initial, start, end, self.every)

    def on_step_begin(self, model: nn.Module, info: StepInfo) -> None:
        target = self.sparsity_at(info)
        if target is not None:
            prune_(model, MagnitudePrune(sparsity=target, scope=self.scope, layers=self.layers,
                                         filter_fn=self.filter_fn))
