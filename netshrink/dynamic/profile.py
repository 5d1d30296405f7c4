"""Operating points and budgets: a profile table measured once, saved in the model's file.

An operating point is one way to run a dynamic model: a width (slimmable), a fixed exit, or a
shared confidence threshold (early exits). ``profile_`` measures each point's validation accuracy,
dense MACs per sample (average over the samples, for thresholds) and latency per sample on this
device, and stores the table as the model's ``dynamic_profile`` metadata section (not in the
transform log: it is a measurement, replaced when measured again), so it travels in the .nsk file.
``choose_point`` picks the most accurate point that fits a MACs or milliseconds budget;
``use_point`` switches the model to it. Latencies are of the machine that profiled.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from netshrink.core.errors import ConfigError
from netshrink.core.transform_log import get_section, set_section
from netshrink.data.dataset import Split
from netshrink.dynamic.calibrate import threshold_curve
from netshrink.dynamic.early_exit import SPEC_ATTR, num_exits, sample_shape, set_exit, set_thresholds
from netshrink.dynamic.slimmable import WIDTHS_ATTR, set_width, widths_of
from netshrink.measure.accuracy import evaluate
from netshrink.measure.macs import count_macs

#: the metadata section the table travels in (``core.transform_log.set_section``)
PROFILE_SECTION = "dynamic_profile"
KINDS = ("width", "exit", "threshold")


@dataclasses.dataclass(frozen=True)
class Profile:
    """What ``profile_`` measures on.

    Args:
        val: the validation split the points are measured on (real inputs, for latency too).
        thresholds: the shared confidence thresholds to profile (default: those the model holds).
        input_shape: one sample's shape, when the model's architecture does not say it.
        latency_samples: latency is per sample at batch 1 over this many validation inputs.
        threads: torch threads while timing.
    """

    val: Split
    thresholds: Sequence[float] = ()
    input_shape: Sequence[int] = ()
    latency_samples: int = 256
    threads: int = 1


def profile_table(model: nn.Module) -> dict[str, Any]:
    """The model's profile (``points``, ``device``, ``threads``); a one-line error if none."""
    table = get_section(model, PROFILE_SECTION)
    if table is None:
        raise ConfigError("this model has no profile table; measure one with profile_(model, Profile(val=...))")
    points = table.get("points")
    if not isinstance(points, list) or not all(_well_formed(point) for point in points):
        raise ConfigError("the model's profile table is malformed (its file was edited or damaged); measure it "
                          "again with profile_(model, Profile(val=...))")
    return table


def _well_formed(point: Any) -> bool:
    """A profile point read from a file: a known kind and numbers where ``choose_point`` reads them."""
    numbers = ("value", "accuracy", "macs", "latency_ms")
    return (isinstance(point, dict) and point.get("kind") in KINDS
            and all(isinstance(point.get(key), (int, float)) and not isinstance(point.get(key), bool)
                    for key in numbers))


def use_point(model: nn.Module, point: dict[str, Any]) -> None:
    """Switch the model to an operating point."""
    if point["kind"] == "width":
        set_width(model, point["value"])
    elif point["kind"] == "exit":
        set_exit(model, int(point["value"]))
    else:
        set_thresholds(model, point["value"])


def candidate_points(model: nn.Module, thresholds: Sequence[float] = ()) -> list[dict[str, Any]]:
    """Every width of a slimmable model; every fixed exit and each of ``thresholds`` (default: the
    thresholds the model holds) of a model with exits."""
    if getattr(model, WIDTHS_ATTR, None) is not None:
        return [{"kind": "width", "value": w} for w in widths_of(model)]
    if getattr(model, SPEC_ATTR, None) is None:
        raise ConfigError(f"{type(model).__name__} has neither early exits nor slimmable widths; nothing to profile")
    shared = list(thresholds) or sorted(set(model.exit_thresholds.tolist()))
    return ([{"kind": "exit", "value": k} for k in range(num_exits(model))]
            + [{"kind": "threshold", "value": float(t)} for t in shared])


@torch.no_grad()
def latency_per_sample(model: nn.Module, x: torch.Tensor, batch_size: int = 1, threads: int = 1,
                       repeats: int = 3) -> float:
    """Milliseconds per sample running real inputs ``x`` in batches (best of ``repeats`` passes,
    after one warm-up pass): the mean over every sample of ``x``, where ``measure.measure_latency``
    gives the median pass, because a dynamic model's cost per sample is an average over inputs
    that leave at different exits."""
    previous = torch.get_num_threads()
    was_training = model.training
    torch.set_num_threads(threads)
    model.eval()
    try:
        best = float("inf")
        for attempt in range(repeats + 1):
            began = time.perf_counter()
            with torch.inference_mode():  # as deployed: no autograd bookkeeping
                for start in range(0, len(x), batch_size):
                    model(x[start:start + batch_size])
            if attempt:
                best = min(best, time.perf_counter() - began)
    finally:
        torch.set_num_threads(previous)
        model.train(was_training)
    return best * 1e3 / len(x)


def profile_(model: nn.Module, config: Profile) -> nn.Module:
    """Measure every operating point on ``config.val`` and store the table as the model's
    ``dynamic_profile`` section, replacing any earlier one (``save`` writes it; read it with
    ``profile_table``). A slimmable model is left at its widest width, a model with exits with the
    thresholds it had, leaving by confidence. Returns the model."""
    if not isinstance(config, Profile):
        raise ConfigError(f"profile_ takes a Profile config, got {type(config).__name__}")
    val, threads = config.val, config.threads
    shape = sample_shape(model, config.input_shape)
    points = candidate_points(model, config.thresholds)
    saved_thresholds = [] if points[0]["kind"] == "width" else model.exit_thresholds.tolist()
    curve = {}
    if points[0]["kind"] != "width":
        values = [p["value"] for p in points if p["kind"] == "threshold"]
        curve = {c["threshold"]: c for c in threshold_curve(model, val, shape, values)}
    device = next(model.parameters()).device
    sample = val.x[:config.latency_samples].to(device)
    for point in points:
        use_point(model, point)
        if point["kind"] == "threshold":
            point.update(accuracy=curve[point["value"]]["accuracy"], macs=curve[point["value"]]["macs"],
                         exit_shares=curve[point["value"]]["exit_shares"])
        else:
            point["accuracy"] = evaluate(model, val, device=device)
            point["macs"] = count_macs(model, shape)  # the path this point runs (a fixed last exit: no heads)
        point["latency_ms"] = latency_per_sample(model, sample, threads=threads)
    if points[0]["kind"] == "width":
        use_point(model, points[-1])
    else:
        set_thresholds(model, saved_thresholds)
    set_section(model, PROFILE_SECTION, {"points": points, "device": str(device), "threads": threads})
    return model


def choose_point(model: nn.Module, budget_macs: float | None = None, budget_ms: float | None = None) -> dict[str, Any]:
    """The most accurate profiled point within the budget (MACs or ms per sample; ties: the
    cheaper). A budget nothing fits is a one-line ConfigError naming the cheapest point."""
    if (budget_macs is None) == (budget_ms is None):
        raise ConfigError("give exactly one budget: MACs per sample or milliseconds per sample")
    key, budget, unit = ("macs", budget_macs, "MACs") if budget_macs is not None else ("latency_ms", budget_ms, "ms")
    if not budget > 0:
        raise ConfigError(f"the budget must be positive, got {budget} {unit}")
    points = profile_table(model)["points"]
    fitting = [p for p in points if p[key] <= budget]
    if not fitting:
        cheapest = min(points, key=lambda p: p[key])
        raise ConfigError(f"no operating point fits {budget:g} {unit} per sample; the cheapest is {describe(cheapest)}")
    return max(fitting, key=lambda p: (p["accuracy"], -p[key]))


def describe(point: dict[str, Any]) -> str:
    """One line: the point and its measured accuracy, MACs and latency."""
    return (f"{point['kind']} {point['value']:g}: val accuracy {point['accuracy']:.4f}, "
            f"{point['macs']:,.0f} MACs, {point['latency_ms']:.3f} ms per sample")
