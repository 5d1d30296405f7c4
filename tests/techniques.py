"""Test-only techniques registered the way a family registers its own: one structural (with a
rebuilder) and one that changes values only."""

import dataclasses

import torch
from torch import nn

from netshrink.core import Config, register


@dataclasses.dataclass(frozen=True)
class ShrinkHead(Config):
    """Replace the last Linear (``fc3``, ``fc2`` or ``head``) by a bias-free one with ``outputs``."""

    outputs: int = 10


def _head_name(model: nn.Module) -> str:
    return next(name for name in ("fc3", "fc2", "head") if hasattr(model, name))


def _rebuild_head(model: nn.Module, record: dict) -> None:
    layer = record["layer"]
    old = model.get_submodule(layer)
    setattr(model, layer, nn.Linear(old.in_features, record["config"]["outputs"], bias=False))


@register(ShrinkHead, "test_shrink_head", rebuild=_rebuild_head)
def _shrink_head(model: nn.Module, config: ShrinkHead) -> dict:
    record = {"layer": _head_name(model), "config": config.to_dict()}
    _rebuild_head(model, record)
    return {"layer": record["layer"]}


@dataclasses.dataclass(frozen=True)
class ScaleWeights(Config):
    """Multiply every Linear weight by ``factor`` (its effect is in the weights alone)."""

    factor: float = 2.0


@register(ScaleWeights, "test_scale_weights", rebuild=None)
def _scale_weights(model: nn.Module, config: ScaleWeights) -> dict:
    names = []
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, nn.Linear):
                module.weight.mul_(config.factor)
                names.append(name)
    return {"targets": names}
