"""``prune_``: the one pruning verb, for every pruning config (``MagnitudePrune``, ``StructuredPrune``,
``TransformerPrune``, ``LayerDrop``, ``SparseGPT``, ``Wanda``: every technique registered with
``verb=prune_``)."""

from __future__ import annotations

from torch import nn

from netshrink.core.config import Config
from netshrink.core.errors import ConfigError
from netshrink.core.registry import apply_, technique_for, techniques


def prune_(model: nn.Module, config: Config) -> nn.Module:
    """Prune ``model`` in place with a pruning config (``MagnitudePrune``, ``StructuredPrune``,
    ``SparseGPT``, ``Wanda``); the transform log records it. Returns the model.

    Example:
        >>> prune_(model, MagnitudePrune(sparsity=0.9)); fit(model, data, FitConfig(epochs=3))
    """
    technique = technique_for(config)
    if technique is None or technique.verb is not prune_:
        known = ", ".join(t.config_type.__name__ for t in techniques() if t.verb is prune_)
        raise ConfigError(f"prune_ takes a pruning config ({known}), got {type(config).__name__}; use apply_ for "
                          "other techniques")
    return apply_(model, config)
