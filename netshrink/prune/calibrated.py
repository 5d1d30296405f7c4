"""The options and checks SparseGPT and Wanda share: pruning on calibration data, unstructured or
N:M (``prune.patterns``), layer by layer over the model's blocks (``calibration.solve``)."""

from __future__ import annotations

import dataclasses

from torch import nn

from netshrink.calibration.batches import BATCH_SIZE
from netshrink.calibration.hessian import LAYER_KINDS, groups_of
from netshrink.core import record_checks
from netshrink.core.config import Config, unlogged
from netshrink.core.errors import ConfigError
from netshrink.core.selection import LayerFilter, check_layer_names
from netshrink.prune.patterns import UNSTRUCTURED, check_fits, resolve_sparsity


@dataclasses.dataclass(frozen=True)
class CalibratedPrune(Config):
    """Options of the pruners that read calibration data (SparseGPT, Wanda).

    Args:
        sparsity: fraction of each layer's weights removed, in [0, 1) (default 0.5); left out
            with an N:M pattern, which fixes it at ``1 - N / M``.
        pattern: ``"unstructured"`` or ``"N:M"`` (e.g. ``"2:4"``: at most N nonzero weights in
            every M consecutive inputs of each output; the layer's inputs must be a multiple of M).
        layers: names of the layers to prune (default: every Linear / Conv ``filter_fn`` accepts).
        batch_size: samples per calibration batch when the data is one tensor / dict or a Dataset.
        filter_fn: ``filter_fn(module, name) -> bool`` picking among the Linear and Conv layers. Not logged.
        calibration_data: model inputs without labels: a tensor or dict of tensors, a list of
            batches, a Dataset or a DataLoader (``calibration.batches``). Not logged.
    """

    LAYER_FIELDS = ("layers",)

    sparsity: float | None = None
    pattern: str = UNSTRUCTURED
    layers: tuple[str, ...] | None = None
    batch_size: int = BATCH_SIZE
    filter_fn: LayerFilter | None = unlogged()
    calibration_data: object | None = unlogged()

    def __post_init__(self) -> None:
        resolve_sparsity(self.sparsity, self.pattern)
        check_layer_names(self.layers)
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {self.batch_size!r}")

    @property
    def fraction(self) -> float:
        """The fraction of weights removed (``sparsity``, or what the pattern fixes)."""
        return resolve_sparsity(self.sparsity, self.pattern)

    def check_layer(self, name: str, module: nn.Module) -> None:
        """The pattern must tile the layer's inputs (per group of a grouped convolution)."""
        check_fits(name, module.weight[0].numel() // groups_of(module), self.pattern)


def check_record(model: nn.Module, record: dict) -> None:
    """A SparseGPT / Wanda log record names Linear / Conv layers of the model."""
    record_checks.layers(model, record.get("layers"), LAYER_KINDS)
