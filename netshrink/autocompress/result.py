"""What ``auto`` returns: the chosen point (the best meeting the budget, else the closest, with
each failed constraint and by how much), the Pareto front and every point with its recipe."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from netshrink.autocompress.budget import UNITS, Budget


@dataclasses.dataclass
class AutoResult:
    """The outcome of a search (also ``OUT/result.json``).

    Attributes:
        chosen: the point to use: the most accurate meeting the budget, else the closest.
        met: whether ``chosen`` meets every constraint.
        failed: for a point that does not, one line per failed constraint and by how much.
        front: the points no other point beats in both cost and validation accuracy, by cost.
        points: every verified point, in the order tried; each has its ``recipe`` (the dict a
            ``netshrink run`` recipe holds), ``recipe_file``, ``model_file``, ``allocation``,
            ``val_accuracy``, ``drop`` (points below the original), ``file_bytes``, ``macs``,
            ``latency_ms``, ``cost`` (of the budget's kind) and ``seconds``.
        original: the original model's validation accuracy and costs.
        limit: the budget's cost limit (a rate resolved against the original).
        seconds: time spent: ``table``, ``points`` and ``total``.
        stopped: why the search stopped.
        partial: set when the time limit was too short for one point with recovery training:
            what happened (``chosen`` is then the one-shot point).
    """

    out: Path
    budget: Budget
    limit: float
    original: dict[str, Any]
    points: list[dict[str, Any]]
    front: list[dict[str, Any]]
    chosen: dict[str, Any]
    met: bool
    failed: list[str]
    seconds: dict[str, float]
    stopped: str
    partial: str | None = None

    @property
    def kind(self) -> str:
        return self.budget.kind

    @property
    def score(self) -> str:
        """What ``val_accuracy`` measures: validation accuracy, or a text encoder's fidelity."""
        return self.original.get("score", "validation accuracy")

    def to_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "budget": dataclasses.asdict(self.budget), "kind": self.kind,
                "limit": self.limit, "original": self.original, "chosen": self.chosen["index"], "met": self.met,
                "failed": self.failed, "front": [p["index"] for p in self.front], "points": self.points,
                "seconds": self.seconds, "stopped": self.stopped, "partial": self.partial}

    def summary(self) -> str:
        """A few lines: the chosen point, whether it meets the budget, the front's size, time."""
        point = self.chosen
        verdict = "meets the budget" if self.met else "MISSED the budget: " + "; ".join(self.failed)
        return "\n".join([
            f"chosen: point {point['index']} ({point['label']}): {self.score} {point['val_accuracy']:.4f} "
            f"(original {self.original['val_accuracy']:.4f}, drop {point['drop']:.2f} points), "
            f"{point['file_bytes']:,} bytes ({self.original['dense_fp32_bytes'] / point['file_bytes']:.1f}x), "
            f"{point['macs']:,} MACs, {point['latency_ms']:.3f} ms",
            f"  {verdict}",
            f"  recipe {point['recipe_file']}; model {point['model_file']}",
            f"{len(self.points)} point(s), {len(self.front)} on the Pareto front; {self.seconds['total']:.0f} s "
            f"({self.stopped})",
        ])


def pareto_front(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The points no other point beats (cost no higher and accuracy no lower, one strictly), by cost."""
    front = [p for p in points
             if not any(q["cost"] <= p["cost"] and q["val_accuracy"] >= p["val_accuracy"]
                        and (q["cost"] < p["cost"] or q["val_accuracy"] > p["val_accuracy"]) for q in points)]
    return sorted(front, key=lambda p: (p["cost"], -p["val_accuracy"], p["index"]))


def violations(point: dict[str, Any], budget: Budget, limit: float) -> list[str]:
    """One line per constraint ``point`` fails, with the amount."""
    failed = []
    if point["cost"] > limit:
        unit = UNITS[budget.kind]
        failed.append(f"{budget.field}: {_amount(point['cost'])} {unit} > {_amount(limit)} {unit} "
                      f"(over by {100 * (point['cost'] / limit - 1):.1f}%)")
    if budget.max_drop is not None and point["drop"] > budget.max_drop:
        failed.append(f"max_drop: {point['drop']:.2f} points > {budget.max_drop:g} "
                      f"(over by {point['drop'] - budget.max_drop:.2f} points)")
    return failed


def _amount(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def choose(points: list[dict[str, Any]], budget: Budget, limit: float) -> tuple[dict[str, Any], list[str]]:
    """The most accurate point meeting every constraint (then the cheapest); when none does, the
    closest: within the cost limit, the least accuracy lost; else the least over the limit.
    Returns it with its failed constraints (empty when it meets the budget)."""
    meeting = [p for p in points if not violations(p, budget, limit)]
    if meeting:
        return max(meeting, key=lambda p: (p["val_accuracy"], -p["cost"], -p["index"])), []
    within = [p for p in points if p["cost"] <= limit]
    closest = (min(within, key=lambda p: (p["drop"], p["cost"], p["index"])) if within
               else min(points, key=lambda p: (p["cost"], -p["val_accuracy"], p["index"])))
    return closest, violations(closest, budget, limit)
