"""Sensitivity analysis (Han et al. 2015, sec. 4 and Fig. 6): how much validation accuracy each
layer loses when it alone is pruned to a given sparsity, and a per-layer plan from it.

Layers whose accuracy holds at high sparsity can lose more; the plan gives every layer the
largest sparsity whose accuracy drop stays within one shared tolerance, with the tolerance chosen
(by bisection) as the smallest that reaches the global target over all chosen weights.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence

from torch import nn

from netshrink.core.errors import ConfigError
from netshrink.core.selection import LayerFilter, select, weight_name
from netshrink.data.dataset import Split
from netshrink.measure.accuracy import evaluate
from netshrink.prune.magnitude import MagnitudePrune, prune_
from netshrink.prune.masks import PRUNABLE_LAYERS
from netshrink.prune.selection import check_sparsity

DEFAULT_SPARSITIES = (0.3, 0.5, 0.7, 0.8, 0.9, 0.95)
Table = dict[str, dict[float, float]]


def sensitivity(model: nn.Module, split: Split, sparsities: Sequence[float] = DEFAULT_SPARSITIES,
                filter_fn: LayerFilter | None = None, layers: Sequence[str] | None = None) -> Table:
    """``{layer: {sparsity: accuracy}}`` on ``split`` (use the validation split), each layer pruned
    alone by magnitude on a copy of ``model``; ``{"": {0.0: accuracy}}`` holds the unpruned one."""
    values = sorted({check_sparsity(s) for s in sparsities})
    if not values:
        raise ConfigError("give at least one sparsity to analyse")
    targets = list(select(model, layers, filter_fn, kinds=PRUNABLE_LAYERS))
    if not targets:
        raise ConfigError(f"nothing to prune in {type(model).__name__}: no layer passes the filter")
    table: Table = {"": {0.0: evaluate(model, split)}}
    for name in targets:
        table[name] = {}
        for s in values:
            trial = copy.deepcopy(model)
            prune_(trial, MagnitudePrune(sparsity=s, layers=(name,)))
            table[name][s] = evaluate(trial, split)
    return table


def format_sensitivity(table: Table) -> str:
    """The table as text: one row per layer, one column per sparsity (accuracy in %)."""
    sparsities = sorted({s for name, row in table.items() if name for s in row})
    header = f"{'layer':<28}" + "".join(f"{s:>8.0%}" for s in sparsities)
    lines = [f"unpruned accuracy {table[''][0.0]:.2%}", header, "-" * len(header)]
    for name, row in table.items():
        if name:
            lines.append(f"{name:<28}" + "".join(f"{row[s]:>8.2%}" for s in sparsities))
    return "\n".join(lines)


def plot_sensitivity(table: Table, path: str | os.PathLike) -> None:
    """Accuracy against sparsity, one line per layer (Han et al. 2015, Fig. 6), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    base = table[""][0.0]
    for name, row in table.items():
        if name:
            points = sorted({0.0: base, **row}.items())
            axes.plot([s * 100 for s, _ in points], [a * 100 for _, a in points], marker="o", label=name)
    axes.set_xlabel("weights pruned in the layer (%)")
    axes.set_ylabel("validation accuracy (%)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _largest_within(row: dict[float, float], base: float, floor: float) -> float:
    """The largest sparsity before the curve (linearly interpolated) first falls below ``floor``."""
    points = sorted({0.0: base, **row}.items())
    for (s0, a0), (s1, a1) in zip(points, points[1:], strict=False):
        if a1 < floor:
            return s0 if a0 <= floor else s0 + (s1 - s0) * (a0 - floor) / (a0 - a1)
    return points[-1][0]


def sensitivity_plan(table: Table, sizes: dict[str, int], target: float, iterations: int = 60) -> dict[str, float]:
    """``{layer: sparsity}`` reaching ``target`` over all weights of ``sizes`` (``{layer: weights}``)
    with the smallest accuracy-drop tolerance shared by every layer."""
    target = check_sparsity(target, "target sparsity")
    layers = [name for name in table if name]
    missing = [name for name in layers if name not in sizes]
    if missing:
        raise ConfigError(f"sizes lacks layers {missing[:3]}; give the weight count of every analysed layer")
    base, total = table[""][0.0], sum(sizes[name] for name in layers)

    def plan_at(tolerance: float) -> dict[str, float]:
        return {name: min(_largest_within(table[name], base, base - tolerance), 0.999) for name in layers}

    def reached(plan: dict[str, float]) -> float:
        return sum(plan[name] * sizes[name] for name in layers) / total

    low, high = 0.0, 1.0
    if reached(plan_at(high)) < target:
        raise ConfigError(f"target sparsity {target} is above what the analysed sparsities reach "
                          f"({reached(plan_at(high)):.3f}); analyse higher sparsities")
    for _ in range(iterations):
        middle = (low + high) / 2
        low, high = (middle, high) if reached(plan_at(middle)) < target else (low, middle)
    return plan_at(high)


def layer_sizes(model: nn.Module, filter_fn: LayerFilter | None = None) -> dict[str, int]:
    """``{layer: number of prunable weights}``, the ``sizes`` of ``sensitivity_plan``."""
    return {name: getattr(module, weight_name(module)).numel()
            for name, module in select(model, filter_fn=filter_fn, kinds=PRUNABLE_LAYERS).items()}
