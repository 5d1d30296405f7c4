"""How a dynamic model trains and is re-calibrated after every fine-tuning, as registry facts.

A model made dynamic by a stage keeps training with its family's joint loss in every later stage
(BranchyNet's sum over exits, Teerapittayanon et al. 2016 sec. III-B; the sandwich rule, Yu &
Huang 2019 sec. 3.1), and its thresholds and profile table are measured again after each, so the
table in the file describes the model as saved. The families register these with their technique
(``core.registry.DynamicTraining``); the functions import their families on use, so registering
stays light.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from netshrink.core.registry import DynamicTraining

#: the default accuracy an exit's threshold may cost on validation (a recipe stage's ``max_drop``)
DEFAULT_MAX_DROP = 0.005


def _exit_loss(model: nn.Module) -> Any:
    from netshrink.dynamic.early_exit import exit_loss

    return exit_loss(model)


def _calibrate_exits(model: nn.Module, val: Any, max_drop: float = DEFAULT_MAX_DROP) -> None:
    from netshrink.dynamic.calibrate import calibrate_thresholds

    calibrate_thresholds(model.eval(), val, max_drop=max_drop)
    _profile(model, val)


def _profile(model: nn.Module, val: Any) -> None:
    from netshrink.dynamic.profile import Profile, profile_

    profile_(model.eval(), Profile(val=val))


def _sandwich_loss(model: nn.Module) -> Any:
    from netshrink.dynamic.sandwich import sandwich_loss

    return sandwich_loss(model)


def _full_width(model: nn.Module) -> None:
    from netshrink.dynamic.slimmable import set_width

    set_width(model, 1.0)


EXITS = DynamicTraining(loss=_exit_loss, calibrate=_calibrate_exits, options={"max_drop": DEFAULT_MAX_DROP})
WIDTHS = DynamicTraining(loss=_sandwich_loss, calibrate=_profile, prepare=_full_width)
