"""The verbs a recipe stage may name: each maps to its config class, the family's in-place verb,
and how its fine-tuning trains (a plain ``fit`` loss, or the family's joint loss for dynamic models).

One table, so the validator and the runner agree on what exists. The classes are imported on
first use, so reading a recipe's verbs does not import every family.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any


@dataclasses.dataclass(frozen=True)
class Verb:
    """A recipe verb: ``config`` and ``apply`` are ``"module:name"`` paths (None: the verb changes
    nothing, as ``train``); ``training`` is ``"fit"`` (labels, or a teacher), ``"exits"``
    (BranchyNet's joint loss), ``"widths"`` (the sandwich rule) or ``"distill"`` (no model change;
    the stage only trains from its teacher)."""

    config: str | None
    apply: str | None
    training: str = "fit"

    def config_class(self) -> type | None:
        return None if self.config is None else _resolve(self.config)

    def apply_fn(self) -> Any:
        return None if self.apply is None else _resolve(self.apply)


VERBS: dict[str, Verb] = {
    "train": Verb(None, None),
    "prune": Verb("netshrink.prune.magnitude:MagnitudePrune", "netshrink.prune.magnitude:prune_"),
    "prune_structured": Verb("netshrink.prune.structured:StructuredPrune", "netshrink.prune.magnitude:prune_"),
    "cluster": Verb("netshrink.quant.cluster:Cluster", "netshrink.quant.cluster:cluster_"),
    "quantize": Verb("netshrink.quant.uniform:Quantize", "netshrink.quant.uniform:quantize_"),
    "binarize": Verb("netshrink.quant.binary:Binarize", "netshrink.quant.binary:binarize_"),
    "separable": Verb("netshrink.arch.separable:Separable", "netshrink.arch.separable:separable_"),
    "low_rank": Verb("netshrink.arch.low_rank:LowRank", "netshrink.arch.low_rank:low_rank_"),
    "early_exit": Verb("netshrink.dynamic.early_exit:EarlyExit", "netshrink.dynamic.early_exit:early_exit_", "exits"),
    "slimmable": Verb("netshrink.dynamic.slimmable:Slimmable", "netshrink.dynamic.slimmable:slimmable_", "widths"),
    "distill": Verb("netshrink.distill.config:Distill", None, "distill"),
}


def _resolve(path: str) -> Any:
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)
