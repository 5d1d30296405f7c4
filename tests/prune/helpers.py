"""Shared by the pruning tests: the prunable weights of a model and a save/load round trip."""

import torch
from torch import nn

from netshrink.codec.container import load, save
from netshrink.core import get_arch
from tests.models import INPUT_SHAPE, TINY_MODELS


def pruned_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{layer: effective weight}`` of every prunable layer (masked where a mask is on)."""
    from netshrink.core.selection import select, weight_name
    from netshrink.prune.masks import PRUNABLE_LAYERS

    return {name: getattr(m, weight_name(m)).detach().clone()
            for name, m in select(model, kinds=PRUNABLE_LAYERS).items()}


def round_trip(model: nn.Module, model_name: str, path) -> nn.Module:
    """Save ``model`` and load it back (a fresh instance for a user's own class)."""
    save(model, path)
    torch.manual_seed(1)  # every value must come from the file
    return load(path) if get_arch(model) is not None else load(path, model=TINY_MODELS[model_name]())


def outputs(model: nn.Module, seed: int = 3) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(torch.randn(6, *INPUT_SHAPE, generator=torch.Generator().manual_seed(seed)))
