"""Pruning: magnitude masks (layer / global, one-shot, gradual, iterative, lottery ticket),
SparseGPT and Wanda on calibration data (unstructured or N:M), sensitivity analysis, and
structured removal of neurons and channels that really shrinks a model, and of a transformer's
attention heads, MLP neurons and whole layers.

Names are imported lazily, so importing the package does not import torch.
"""

from __future__ import annotations

from netshrink.lazy_exports import lazy_getattr

_EXPORTS = {
    "MagnitudePrune": "netshrink.prune.magnitude",
    "prune_": "netshrink.prune.verb",
    "StructuredPrune": "netshrink.prune.structured",
    "TransformerPrune": "netshrink.prune.transformer",
    "LayerDrop": "netshrink.prune.layer_drop",
    "SparseGPT": "netshrink.prune.sparsegpt",
    "Wanda": "netshrink.prune.wanda",
    "register_channel_rule": "netshrink.prune.channel_rules",
    "GradualPrune": "netshrink.prune.gradual",
    "cubic_sparsity": "netshrink.prune.gradual",
    "RoundResult": "netshrink.prune.iterative",
    "iterative_prune": "netshrink.prune.iterative",
    "lottery_ticket": "netshrink.prune.iterative",
    "plain_state": "netshrink.prune.iterative",
    "rewind_": "netshrink.prune.iterative",
    "round_sparsities": "netshrink.prune.iterative",
    "mask_sparsity": "netshrink.prune.masks",
    "PRUNABLE_LAYERS": "netshrink.prune.masks",
    "format_sensitivity": "netshrink.prune.layer_sensitivity",
    "layer_sizes": "netshrink.prune.layer_sensitivity",
    "plot_sensitivity": "netshrink.prune.layer_sensitivity",
    "sensitivity": "netshrink.prune.layer_sensitivity",
    "sensitivity_plan": "netshrink.prune.layer_sensitivity",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS)
