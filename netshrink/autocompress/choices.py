"""The per-layer actions ``auto`` chooses among, and which layers each family applies to.

A layer's ``Choice`` is one setting of every family at once: magnitude sparsity (Han et al. 2015)
with its kept weights shared by a k-means codebook (Deep Compression's clustering, Han et al.
2016, sec. 3) or put on a uniform integer grid (Jacob et al. 2018), each at 2 to 8 bits; or,
for latency and MACs budgets, a fraction of the layer's output channels removed (Li et al. 2017).
``KEEP`` leaves the layer as it is. Sparsity never comes alone: a pruned layer's zeros are baked
in when its stage is finalized, and only a later parametrization that keeps them (the codebook's
fixed zero) stops the next fine-tuning from regrowing them, so every pruned layer is also
clustered or quantized (8-bit clustering of a small layer is exact: each value its own centroid).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from netshrink.core.selection import WEIGHTED_LAYERS, select

VALUES = ("cluster", "int")


@dataclasses.dataclass(frozen=True, order=True)
class Choice:
    """One layer's setting. ``values``: ``"cluster"`` (codebook), ``"int"`` (uniform grid) or None
    (weights kept as they are); ``bits`` with it; ``sparsity`` of the weights; ``amount``: share of
    the output channels removed (structured pruning); ``group``: an ``"int"`` grid per group of at
    most this many weights of each row (a text encoder's, ``autocompress.text``; None: per row or
    as the family does)."""

    sparsity: float = 0.0
    values: str | None = None
    bits: int | None = None
    amount: float = 0.0
    group: int | None = None

    def __post_init__(self) -> None:
        if (self.values is None) != (self.bits is None) or (self.values is not None and self.values not in VALUES):
            raise ValueError(f"values must be one of {VALUES} with bits, or neither: {self}")
        if self.sparsity and self.values is None:
            raise ValueError("a pruned layer is clustered or quantized too (see the module docstring)")
        if self.group is not None and self.values != "int":
            raise ValueError(f"a group is of an int grid: {self}")

    @property
    def label(self) -> str:
        """``"keep"``, ``"s90 cluster4"``, ``"int6"``, ``"channels -50%"``."""
        parts = [f"s{round(100 * self.sparsity)}"] if self.sparsity else []
        if self.values is not None:
            parts.append(f"{self.values}{self.bits}" + (f" g{self.group}" if self.group else ""))
        if self.amount:
            parts.append(f"channels -{round(100 * self.amount)}%")
        return " ".join(parts) or "keep"

    def to_dict(self) -> dict[str, Any]:
        """The fields, ``group`` only when set (a table stored before it existed keeps its key)."""
        found = dataclasses.asdict(self)
        if self.group is None:
            del found["group"]
        return found

    @classmethod
    def from_dict(cls, table: dict[str, Any]) -> Choice:
        return cls(**table)


KEEP = Choice()


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """The candidate settings of every layer.

    Args:
        sparsities: magnitude sparsities tried (0: dense), each with every bit width.
        cluster_bits: codebook bits tried (Deep Compression's clustering); () leaves the family out.
        int_bits: uniform-grid bits tried; () leaves the family out.
        amounts: shares of output channels removed, for latency and MACs budgets.
    """

    sparsities: tuple[float, ...] = (0.0, 0.5, 0.7, 0.8, 0.9, 0.93, 0.95, 0.97)
    cluster_bits: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8)
    int_bits: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8)
    amounts: tuple[float, ...] = (0.25, 0.5, 0.75)

    def __post_init__(self) -> None:
        from netshrink.core.errors import ConfigError
        from netshrink.prune.selection import check_sparsity

        for name in ("sparsities", "amounts"):
            values = tuple(getattr(self, name))
            for value in values:
                check_sparsity(value, name)
            if name == "amounts" and 0.0 in values:
                raise ConfigError("amounts are above 0 (keeping every channel is always a candidate)")
            object.__setattr__(self, name, values)
        for name in ("cluster_bits", "int_bits"):
            values = tuple(getattr(self, name))
            if any(isinstance(b, bool) or not isinstance(b, int) or not 2 <= b <= 8 for b in values):
                raise ConfigError(f"{name} are integers from 2 to 8, got {list(values)}")
            object.__setattr__(self, name, values)
        if not self.sparsities and (self.cluster_bits or self.int_bits):
            raise ConfigError("sparsities needs at least one value (0: dense) for the bits to be tried with")

    def choices(self, kind: str) -> list[Choice]:
        """Every candidate of one layer for a budget of ``kind``, ``KEEP`` first. Only structural
        changes move latency and dense MACs, so those budgets choose among channel amounts."""
        if kind != "bytes":
            return [KEEP] + [Choice(amount=a) for a in self.amounts]
        grids = [("cluster", b) for b in self.cluster_bits] + [("int", b) for b in self.int_bits]
        return [KEEP] + [Choice(sparsity=s, values=v, bits=b) for s in self.sparsities for v, b in grids]


def candidate_layers(model: nn.Module, kind: str) -> list[str]:
    """The layers a family applies to, in model order: Linear and Conv weights for a size budget,
    the layers whose output channels can be removed for latency and MACs (``channel_groups``: a
    classifier's outputs and channels tied to a reshape cannot). Transformers' attention and
    embeddings are not searched yet."""
    if kind == "bytes":
        return list(select(model, kinds=WEIGHTED_LAYERS))
    from netshrink.core.errors import ConfigError
    from netshrink.prune.dependency import channel_groups

    try:
        groups = channel_groups(model)
    except ConfigError:  # a model torch.fx cannot trace has no channels to remove
        return []
    producers = [g.producers[0] for g in groups if g.prunable and g.producers]
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    return sorted(dict.fromkeys(producers), key=order.__getitem__)
