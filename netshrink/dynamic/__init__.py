"""Dynamic computation: one model, many operating points.

Early exits (BranchyNet, Teerapittayanon et al. 2016) leave easy samples at an early classifier
and really drop them from the batch; slimmable widths (Yu et al. 2019) run the same weights
narrower; a profile table saved in the model's file lets a MACs or latency budget pick the point.
"""

from netshrink.dynamic.calibrate import calibrate, exit_costs, threshold_curve
from netshrink.dynamic.early_exit import (
    EarlyExit,
    all_exit_logits,
    early_exit_,
    exit_loss,
    num_exits,
    set_exit,
    set_thresholds,
)
from netshrink.dynamic.profile import DynamicProfile, choose_point, describe, profile_, profile_table, use_point
from netshrink.dynamic.sandwich import sandwich_loss
from netshrink.dynamic.slimmable import Slimmable, get_width, make_slimmable, set_width, slimmable_, widths_of
from netshrink.dynamic.stages import split_stages

__all__ = [
    "DynamicProfile", "EarlyExit", "Slimmable", "all_exit_logits", "calibrate", "choose_point", "describe",
    "early_exit_", "exit_costs", "exit_loss", "get_width", "make_slimmable", "num_exits", "profile_",
    "profile_table", "sandwich_loss", "set_exit", "set_thresholds", "set_width", "slimmable_", "split_stages",
    "threshold_curve", "use_point", "widths_of",
]
