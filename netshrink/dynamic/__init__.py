"""Dynamic computation: one model, many operating points.

Early exits (BranchyNet, Teerapittayanon et al. 2016) leave easy samples at an early classifier
and really drop them from the batch; slimmable widths (Yu et al. 2019) run the same weights
narrower; a profile table saved in the model's file lets a MACs or latency budget pick the point.

Names are imported lazily, so importing the package does not import torch.
"""

from __future__ import annotations

from netshrink.lazy_exports import lazy_getattr

_EXPORTS = {
    "calibrate_thresholds": "netshrink.dynamic.calibrate",
    "exit_costs": "netshrink.dynamic.calibrate",
    "threshold_curve": "netshrink.dynamic.calibrate",
    "EarlyExit": "netshrink.dynamic.early_exit",
    "all_exit_logits": "netshrink.dynamic.early_exit",
    "early_exit_": "netshrink.dynamic.early_exit",
    "exit_loss": "netshrink.dynamic.early_exit",
    "num_exits": "netshrink.dynamic.early_exit",
    "set_exit": "netshrink.dynamic.early_exit",
    "set_thresholds": "netshrink.dynamic.early_exit",
    "Profile": "netshrink.dynamic.profile",
    "choose_point": "netshrink.dynamic.profile",
    "describe": "netshrink.dynamic.profile",
    "profile_": "netshrink.dynamic.profile",
    "profile_table": "netshrink.dynamic.profile",
    "use_point": "netshrink.dynamic.profile",
    "sandwich_loss": "netshrink.dynamic.sandwich",
    "Slimmable": "netshrink.dynamic.slimmable",
    "get_width": "netshrink.dynamic.slimmable",
    "make_slimmable": "netshrink.dynamic.slimmable",
    "set_width": "netshrink.dynamic.slimmable",
    "slimmable_": "netshrink.dynamic.slimmable",
    "widths_of": "netshrink.dynamic.slimmable",
    "split_stages": "netshrink.dynamic.stages",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS)
