"""``prune_``: the one pruning verb, for every pruning config (``MagnitudePrune``, ``StructuredPrune``,
``TransformerPrune``, ``LayerDrop``, ``SparseGPT``, ``Wanda``: every technique registered with
``verb=prune_``)."""

from __future__ import annotations

from torch import nn

from netshrink.core.config import Config
from netshrink.core.registry import apply_as


def prune_(model: nn.Module, config: Config) -> nn.Module:
    """Prune ``model`` in place with a pruning config (``MagnitudePrune``, ``StructuredPrune``,
    ``SparseGPT``, ``Wanda``); the transform log records it. Returns the model.

    Example:
        >>> prune_(model, MagnitudePrune(sparsity=0.9)); fit(model, data, FitConfig(epochs=3))
    """
    return apply_as(prune_, model, config, "pruning")
