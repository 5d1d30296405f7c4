"""One choice per layer under a cost limit: an integer program solved by ``scipy.optimize.milp``.

HAQ / HAWQ-V3 style (Yao et al. 2021, sec. 3.4: "mixed-precision as an integer linear program"),
across families: binary ``x[l, c]`` picks candidate ``c`` for layer ``l``; each layer picks one;
the summed cost stays within the limit; the summed sensitivity is least. A tiny cost term breaks
ties toward the cheaper candidate, so a loose limit does not spend bytes for nothing.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from netshrink.autocompress.choices import Choice

#: sensitivity measures: ``"kl"`` (output divergence) or ``"accuracy"`` (calibration accuracy
#: lost, in points, divergence breaking ties)
MEASURES = ("kl", "accuracy")
_TIE_BREAK = 1e-6


def sensitivity(row: dict, measure: str, original_accuracy: float) -> float:
    """A table row's sensitivity under ``measure`` (``MEASURES``)."""
    if measure == "kl":
        return row["kl"]
    return max(0.0, 100 * (original_accuracy - row["accuracy"])) + 1e-3 * row["kl"]


def allocate(table: dict[str, list[dict]], limit: float, measure: str = "kl",
             original_accuracy: float = 1.0) -> dict[str, Choice] | None:
    """``{layer: Choice}`` whose summed cost (each row's ``cost``, a change from the original) is
    at most ``limit``, least summed sensitivity; None when no allocation fits."""
    layers = list(table)
    rows = [row for layer in layers for row in table[layer]]
    if not rows:
        return None
    cost = np.array([row["cost"] for row in rows], dtype=float)
    scale = max(float(np.abs(cost).max()), 1.0)
    objective = np.array([sensitivity(row, measure, original_accuracy) for row in rows]) + _TIE_BREAK * cost / scale
    one_each = np.zeros((len(layers), len(rows)))
    start = 0
    for i, layer in enumerate(layers):
        one_each[i, start:start + len(table[layer])] = 1
        start += len(table[layer])
    result = milp(objective, integrality=np.ones(len(rows)), bounds=Bounds(0, 1),
                  constraints=[LinearConstraint(one_each, 1, 1), LinearConstraint(cost[None, :], -np.inf, limit)])
    if result.x is None:
        return None
    picked = np.round(result.x).astype(bool)
    allocation, start = {}, 0
    for layer in layers:
        chosen = np.flatnonzero(picked[start:start + len(table[layer])])
        allocation[layer] = Choice.from_dict(table[layer][int(chosen[0])]["choice"])
        start += len(table[layer])
    return allocation


def cheapest(table: dict[str, list[dict]]) -> dict[str, Choice]:
    """Every layer at its cheapest candidate (the smallest any allocation predicts)."""
    return {layer: Choice.from_dict(min(rows, key=lambda r: r["cost"])["choice"]) for layer, rows in table.items()}


def predicted(table: dict[str, list[dict]], allocation: dict[str, Choice]) -> float:
    """The summed cost change the table predicts for ``allocation``."""
    return sum(next(r["cost"] for r in table[layer] if Choice.from_dict(r["choice"]) == choice)
               for layer, choice in allocation.items())
