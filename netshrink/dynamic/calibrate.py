"""Exit costs and threshold calibration: accuracy against average MACs over thresholds.

One pass over the validation split records every exit's logits for every sample; which exit a
sample leaves at for a threshold ``t`` (shared by all early exits) is then a tensor operation, so
the whole accuracy / MACs curve costs one forward pass. The calibrated threshold is the cheapest
one whose accuracy is at most ``max_drop`` below the last exit's (BranchyNet sec. III-C sets its
entropy thresholds the same way, on held-out data), or the most accurate one within an average
MACs budget. Tuned on validation data only, never on test.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from netshrink.core.errors import ConfigError
from netshrink.data.dataset import Split
from netshrink.dynamic.early_exit import all_exit_logits, confidence, exit_spec, sample_shape, set_thresholds
from netshrink.dynamic.stages import batch_first_shapes, cached_stages
from netshrink.measure.macs import count_macs


def exit_costs(model: nn.Module, input_shape: Sequence[int] = ()) -> list[int]:
    """Dense MACs per sample of leaving at each exit: the stages run so far plus every head
    evaluated on the way (the last exit pays all stages and all early heads)."""
    spec = exit_spec(model)
    shape = sample_shape(model, input_shape)
    stages = cached_stages(model, spec.blocks)
    device = model.exit_thresholds.device
    was_training = model.training
    model.eval()
    try:
        inputs = [shape, *batch_first_shapes(stages, shape, device)]
        stage_macs = [count_macs(stage, inputs[k]) for k, stage in enumerate(stages)]
        head_macs = [count_macs(head, inputs[k + 1]) for k, head in enumerate(model.exit_heads)]
    finally:
        model.train(was_training)
    costs = [sum(stage_macs[:k + 1]) + sum(head_macs[:k + 1]) for k in range(len(head_macs))]
    return costs + [sum(stage_macs) + sum(head_macs)]


@torch.no_grad()
def exit_predictions(model: nn.Module, split: Split, batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """``(confidences (E, N) of the early exits, correct (E + 1, N) of every exit)`` on ``split``."""
    criterion = exit_spec(model).criterion
    device = model.exit_thresholds.device
    was_training = model.training
    model.eval()
    confidences, correct = [], []
    try:
        for start in range(0, len(split.x), batch_size):
            x, y = split.x[start:start + batch_size].to(device), split.y[start:start + batch_size].to(device)
            logits = all_exit_logits(model, x)
            confidences.append(torch.stack([confidence(z, criterion) for z in logits[:-1]]).cpu())
            correct.append(torch.stack([z.argmax(-1) == y for z in logits]).cpu())
    finally:
        model.train(was_training)
    return torch.cat(confidences, dim=1), torch.cat(correct, dim=1)


def exits_taken(confidences: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """(T, N): for each shared threshold, the exit each sample leaves at (the first whose
    confidence exceeds it, else the last, ``E``)."""
    leaves = confidences.unsqueeze(0) > thresholds.view(-1, 1, 1)  # (T, E, N)
    first = leaves.int().argmax(dim=1)  # first True, or 0 where none
    return torch.where(leaves.any(dim=1), first, torch.full_like(first, confidences.shape[0]))


def threshold_curve(model: nn.Module, split: Split, input_shape: Sequence[int] = (),
                    thresholds: Sequence[float] | None = None) -> list[dict[str, Any]]:
    """Accuracy, average MACs per sample and the share leaving at each exit, per threshold.

    ``thresholds`` default to the 0..1 quantiles of the early exits' confidences (256 of them)
    plus 0 and 1, so the curve is resolved where the samples are."""
    confidences, correct = exit_predictions(model, split)
    costs = torch.tensor(exit_costs(model, input_shape), dtype=torch.float64)
    if thresholds is None:
        grid = torch.quantile(confidences.flatten().double(), torch.linspace(0, 1, 256, dtype=torch.float64))
        values = torch.cat([torch.tensor([0.0, 1.0], dtype=torch.float64), grid]).unique()
    else:
        values = torch.tensor([float(t) for t in thresholds], dtype=torch.float64)
    taken = exits_taken(confidences.double(), values)  # (T, N)
    samples = torch.arange(correct.shape[1])
    curve = []
    for t, exits in zip(values.tolist(), taken, strict=True):
        shares = torch.bincount(exits, minlength=correct.shape[0]).double() / len(exits)
        curve.append({"threshold": t, "accuracy": float(correct[exits, samples].double().mean()),
                      "macs": float((shares * costs).sum()), "exit_shares": shares.tolist()})
    return curve


def calibrate_thresholds(model: nn.Module, val: Split, max_drop: float | None = None, target_macs: float | None = None,
                         input_shape: Sequence[int] = (), reference_accuracy: float | None = None) -> dict[str, Any]:
    """Set one threshold for every early exit, chosen on ``val``, and return its curve point.

    Exactly one target: ``max_drop`` (accuracy fraction, e.g. 0.005 = half a point) the cheapest
    threshold at most that far below ``reference_accuracy`` (default: the last exit's accuracy on
    ``val``; pass the network without exits' accuracy on the same split to bound the drop against
    it); ``target_macs`` the most accurate threshold whose average MACs per sample fit. A target
    nothing fits is a one-line error naming the closest point.
    """
    if (max_drop is None) == (target_macs is None):
        raise ConfigError("calibrate needs exactly one target: max_drop (accuracy) or target_macs")
    curve = threshold_curve(model, val, input_shape)
    if max_drop is not None:
        if not 0.0 <= max_drop <= 1.0:
            raise ConfigError(f"max_drop is an accuracy fraction in [0, 1], got {max_drop}")
        full = next(p for p in curve if p["threshold"] == 1.0)["accuracy"]
        reference = full if reference_accuracy is None else float(reference_accuracy)
        fitting = [p for p in curve if p["accuracy"] >= reference - max_drop - 1e-12]
        if not fitting:
            best = max(curve, key=lambda p: (p["accuracy"], -p["macs"]))
            raise ConfigError(f"no threshold is within {max_drop} of accuracy {reference:.4f}; the most accurate is "
                              f"threshold {best['threshold']:.4f} at {best['accuracy']:.4f}")
        chosen = min(fitting, key=lambda p: (p["macs"], -p["accuracy"]))
    else:
        fitting = [p for p in curve if p["macs"] <= target_macs]
        if not fitting:
            cheapest = min(curve, key=lambda p: p["macs"])
            raise ConfigError(f"no threshold fits {target_macs:,.0f} MACs per sample; the cheapest is threshold "
                              f"{cheapest['threshold']:.4f} at {cheapest['macs']:,.0f} MACs")
        chosen = max(fitting, key=lambda p: (p["accuracy"], -p["macs"]))
    set_thresholds(model, chosen["threshold"])
    return chosen
