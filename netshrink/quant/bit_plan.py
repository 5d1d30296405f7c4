"""Mixed precision chosen automatically: a per-layer sensitivity sweep, then bits under a size budget.

Deep Compression chose 8 bits for conv layers and 5 for fc layers by hand; here the bits come from
measurements. ``bit_sensitivity`` quantizes one layer at a time at every candidate
bit width (the rest of the model untouched) and records the accuracy on a split given explicitly
(validation, never test). ``plan_bits`` then starts every layer at the most bits and greedily
takes away a bit step from the layer that loses the least accuracy per weight-bit saved, until
the average bits per weight meet the budget (the losses of separate layers are assumed to add up).
The plan is a
``{layer: bits}`` map for ``Quantize(bits=plan)`` or ``Cluster(bits=plan)``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

from torch import nn

from netshrink.core.config import Config
from netshrink.core.errors import ConfigError
from netshrink.core.registry import apply_
from netshrink.core.selection import LayerFilter
from netshrink.data.dataset import Split
from netshrink.quant.layers import targets

ConfigForBits = Callable[[dict[str, int]], Config]


def bit_sensitivity(model: nn.Module, split: Split, make_config: ConfigForBits,
                    candidates: Sequence[int] = (8, 6, 5, 4, 3, 2),
                    filter_fn: LayerFilter | None = None) -> dict[str, dict[int, float]]:
    """``{layer: {bits: accuracy on split}}`` with only that layer quantized by
    ``make_config({layer: bits})`` (e.g. ``lambda plan: Cluster(bits=plan)``)."""
    from netshrink.measure import evaluate

    if not candidates:
        raise ConfigError("give at least one candidate bit width")
    result = {}
    for name in layer_weights(model, filter_fn):
        result[name] = {}
        for bits in candidates:
            trial = copy.deepcopy(model)
            apply_(trial, make_config({name: bits}))
            result[name][bits] = evaluate(trial, split)
    return result


def layer_weights(model: nn.Module, filter_fn: LayerFilter | None = None) -> dict[str, int]:
    """``{layer: weight count}`` of the quantizable layers ``filter_fn`` picks."""
    return {name: getattr(module, tensor).numel() for name, module, tensor, _ in targets(model, 8, filter_fn)}


def plan_bits(sensitivity: dict[str, dict[int, float]], weights: dict[str, int],
              budget_bits: float) -> dict[str, int]:
    """``{layer: bits}`` with average bits per weight at most ``budget_bits``, greedily losing the
    least accuracy per bit saved. ``weights`` is each layer's weight count."""
    if not sensitivity:
        raise ConfigError("the sensitivity sweep is empty; run bit_sensitivity on a model with quantizable layers")
    options = {name: sorted(accuracies, reverse=True) for name, accuracies in sensitivity.items()}
    plan = {name: bits[0] for name, bits in options.items()}
    total = sum(weights[name] for name in plan)
    smallest = sum(weights[name] * bits[-1] for name, bits in options.items()) / total
    if budget_bits < smallest:
        raise ConfigError(f"a budget of {budget_bits} bits per weight is below the {smallest:.3g} the fewest "
                          "candidate bits give; raise the budget or add smaller candidates")

    def average() -> float:
        return sum(weights[name] * bits for name, bits in plan.items()) / total

    while average() > budget_bits:
        best, best_cost = None, float("inf")
        for name, bits in plan.items():
            lower = [b for b in options[name] if b < bits]
            if not lower:
                continue
            loss = sensitivity[name][bits] - sensitivity[name][lower[0]]
            cost = loss / (weights[name] * (bits - lower[0]))
            if cost < best_cost:
                best, best_cost = name, cost
        plan[best] = max(b for b in options[best] if b < plan[best])
    return plan
