"""netshrink: compress PyTorch models into small, deployable files with measured costs.

The public verbs are imported lazily so ``import netshrink`` stays light.
"""

from __future__ import annotations

from netshrink.lazy_exports import lazy_getattr

__version__ = "0.1.0"

_EXPORTS = {
    "save": "netshrink.codec.container",
    "load": "netshrink.codec.container",
    "create": "netshrink.models",
    "list_models": "netshrink.models",
    "load_dataset": "netshrink.data",
    "fit": "netshrink.train",
    "FitConfig": "netshrink.train",
    "distill": "netshrink.distill",
    "Distill": "netshrink.distill",
    "measure_model": "netshrink.measure",
    "apply_": "netshrink.core",
    "finalize_": "netshrink.core",
    "Finalize": "netshrink.core",
    "get_log": "netshrink.core",
    "NetshrinkError": "netshrink.core",
    "NetshrinkFormatError": "netshrink.core",
    "prune_": "netshrink.prune",
    "MagnitudePrune": "netshrink.prune",
    "StructuredPrune": "netshrink.prune",
    "GradualPrune": "netshrink.prune",
    "iterative_prune": "netshrink.prune",
    "lottery_ticket": "netshrink.prune",
    "sensitivity": "netshrink.prune",
    "sensitivity_plan": "netshrink.prune",
    "quantize_": "netshrink.quant",
    "Quantize": "netshrink.quant",
    "cluster_": "netshrink.quant",
    "Cluster": "netshrink.quant",
    "binarize_": "netshrink.quant",
    "Binarize": "netshrink.quant",
    "separable_": "netshrink.arch",
    "Separable": "netshrink.arch",
    "low_rank_": "netshrink.arch",
    "LowRank": "netshrink.arch",
    "early_exit_": "netshrink.dynamic",
    "EarlyExit": "netshrink.dynamic",
    "slimmable_": "netshrink.dynamic",
    "Slimmable": "netshrink.dynamic",
    "set_width": "netshrink.dynamic",
    "set_exit": "netshrink.dynamic",
    "load_recipe": "netshrink.pipeline",
    "run_recipe": "netshrink.pipeline",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS)
