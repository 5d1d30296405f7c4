"""Iterative prune-and-retrain (Han et al. 2015, sec. 3.3) and lottery tickets (Frankle & Carbin
2019, sec. 2; rewinding to an early step: Frankle et al. 2020, "Linear Mode Connectivity and the
Lottery Ticket Hypothesis", sec. 5).

Both repeat rounds of: prune the smallest weights, then train. Han et al. keep training the pruned
weights from where they are; a lottery ticket instead rewinds the surviving weights to their
values at initialisation (or at an early step ``k``) before each retraining, keeping the mask.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import torch
from torch import nn

from netshrink.core.errors import ConfigError
from netshrink.core.selection import LayerFilter
from netshrink.data import Dataset
from netshrink.prune.magnitude import MagnitudePrune, prune_
from netshrink.prune.masks import current_mask
from netshrink.prune.selection import check_sparsity
from netshrink.train import Callback, FitConfig, StepInfo, fit


def round_sparsities(final: float, rounds: int) -> list[float]:
    """Sparsity after each of ``rounds`` rounds, each removing the same fraction of what is left
    (Frankle & Carbin's p% per round): ``1 - (1 - final) ** (k / rounds)``."""
    check_sparsity(final)
    if not isinstance(rounds, int) or rounds < 1:
        raise ConfigError(f"rounds must be a positive integer, got {rounds!r}")
    return [1.0 - (1.0 - final) ** (k / rounds) for k in range(1, rounds + 1)]


_PARAMETRIZED = re.compile(r"^(?:(?P<module>.*)\.)?parametrizations\.(?P<tensor>[^.]+)\.(?P<rest>.+)$")


def _plain_key(key: str) -> tuple[str, str, str] | None:
    """``(plain key, module, tensor)`` of a parametrized tensor's ``original`` (None for a mask or
    other parametrization state); ``(key, "", "")`` for an ordinary tensor."""
    match = _PARAMETRIZED.match(key)
    if match is None:
        return key, "", ""
    if match["rest"] != "original":
        return None
    module = match["module"] or ""
    return (f"{module}.{match['tensor']}" if module else match["tensor"]), module, match["tensor"]


def plain_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state under plain names (``fc1.weight``, not ``fc1.parametrizations.weight.
    original``), masks left out: what to rewind to."""
    return {plain[0]: tensor.detach().clone() for key, tensor in model.state_dict().items()
            if (plain := _plain_key(key)) is not None}


@torch.no_grad()
def rewind_(model: nn.Module, snapshot: dict[str, torch.Tensor]) -> nn.Module:
    """Set every weight, bias and buffer back to ``snapshot`` (from ``plain_state``), keeping the
    masks: pruned weights stay zero, surviving ones get their old values."""
    state = {}
    for key, tensor in model.state_dict().items():
        plain = _plain_key(key)
        if plain is None:
            state[key] = tensor  # masks stay
            continue
        name, module, tensor_name = plain
        mask = current_mask(model.get_submodule(module), tensor_name) if tensor_name else None
        state[key] = snapshot[name] * mask if mask is not None else snapshot[name]
    model.load_state_dict(state)  # copies in place: parameters (and optimizers) keep their identity
    return model


class _Snapshot(Callback):
    """Takes ``plain_state`` before optimizer step ``step`` (the rewind point)."""

    def __init__(self, step: int) -> None:
        self.step, self.state = step, None

    def on_step_begin(self, model: nn.Module, info: StepInfo) -> None:
        if info.step == self.step:
            self.state = plain_state(model)


@dataclasses.dataclass
class RoundResult:
    """One prune-then-train round: the sparsity reached and ``fit``'s history."""

    sparsity: float
    history: list[dict[str, Any]]
    val_acc: float | None


def iterative_prune(model: nn.Module, data: Dataset, sparsity: float, rounds: int, config: FitConfig,
                    scope: str = "global", filter_fn: LayerFilter | None = None,
                    rewind_to: dict[str, torch.Tensor] | None = None, **fit_kwargs: Any) -> list[RoundResult]:
    """``rounds`` rounds of magnitude pruning (``round_sparsities``) each followed by ``fit``
    (Han et al. 2015). With ``rewind_to`` (a ``plain_state``), surviving weights are rewound to it
    after each pruning (a lottery ticket). Returns one ``RoundResult`` per round."""
    results = []
    for target in round_sparsities(sparsity, rounds):
        prune_(model, MagnitudePrune(sparsity=target, scope=scope, filter_fn=filter_fn))
        if rewind_to is not None:
            rewind_(model, rewind_to)
        result = fit(model, data, config, **fit_kwargs)
        results.append(RoundResult(target, result.history, result.val_acc))
    return results


def lottery_ticket(model: nn.Module, data: Dataset, sparsity: float, config: FitConfig, rounds: int = 1,
                   rewind_step: int = 0, scope: str = "global", filter_fn: LayerFilter | None = None,
                   **fit_kwargs: Any) -> list[RoundResult]:
    """Find a winning ticket by iterative magnitude pruning with rewinding (Frankle & Carbin 2019,
    sec. 2, "Identifying winning tickets"): train ``model`` (dense) with ``config``, keeping its
    weights before optimizer step ``rewind_step`` (0 = the initialisation), then ``rounds`` times:
    prune, rewind the surviving weights, retrain. Returns the dense run and then one result per round.
    """
    if not isinstance(rewind_step, int) or rewind_step < 0:
        raise ConfigError(f"rewind_step must be a step index >= 0, got {rewind_step!r}")
    snapshot = _Snapshot(rewind_step)
    callbacks = tuple(fit_kwargs.pop("callbacks", ()))
    dense = fit(model, data, config, callbacks=[snapshot, *callbacks], **fit_kwargs)
    if snapshot.state is None:
        raise ConfigError(f"rewind_step {rewind_step} is beyond the {config.epochs} epoch(s) of training; "
                          "pick an earlier step")
    return [RoundResult(0.0, dense.history, dense.val_acc),
            *iterative_prune(model, data, sparsity, rounds, config, scope, filter_fn, snapshot.state,
                             callbacks=callbacks, **fit_kwargs)]
