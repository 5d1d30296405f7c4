"""Pruning: magnitude masks (layer / global, one-shot, gradual, iterative, lottery ticket),
sensitivity analysis, and structured removal of neurons and channels that really shrinks a model."""

from netshrink.prune.gradual import GradualPrune, cubic_sparsity
from netshrink.prune.iterative import (
    RoundResult,
    iterative_prune,
    lottery_ticket,
    plain_state,
    rewind_,
    round_sparsities,
)
from netshrink.prune.magnitude import MagnitudePrune, prune_
from netshrink.prune.masks import mask_sparsity, prunable_layers
from netshrink.prune.sensitivity import (
    format_sensitivity,
    layer_sizes,
    plot_sensitivity,
    sensitivity,
    sensitivity_plan,
)
from netshrink.prune.structured import StructuredPrune

__all__ = ["GradualPrune", "MagnitudePrune", "RoundResult", "StructuredPrune", "cubic_sparsity",
           "format_sensitivity", "iterative_prune", "layer_sizes", "lottery_ticket", "mask_sparsity",
           "plain_state", "plot_sensitivity", "prunable_layers", "prune_", "rewind_", "round_sparsities",
           "sensitivity", "sensitivity_plan"]
