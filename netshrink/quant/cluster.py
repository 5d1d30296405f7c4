"""Weight clustering (weight sharing; Han et al. 2016, "Deep Compression", section 3).

Each chosen layer's nonzero weights are clustered by 1-D k-means (``netshrink.quant.kmeans1d``)
and every weight is replaced by its cluster's centroid, so the layer stores a small codebook plus
one ``bits``-bit index per weight. Pruned weights (exact zeros) stay zero and out of the clustering
(pruning then clustering is the Deep Compression chain): in a layer with zeros, zero takes one of
the ``2**bits`` codebook entries and the nonzero weights share the other ``2**bits - 1``.

Fine-tuning (section 3.3): the clustering is a ``torch.nn.utils.parametrize`` parametrization
``weight = codebook[index]`` whose only trainable tensor is the centroids. Indexing's backward pass
adds up the gradients of all weights of a cluster, which is exactly the paper's centroid gradient,
so ``fit()`` or any hand-written loop fine-tunes the centroids while weights stay tied to them.
``finalize_`` bakes the shared values in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import torch
from torch import nn
from torch.nn.utils import parametrize

from netshrink.core import record_checks
from netshrink.core.config import Config, unlogged
from netshrink.core.errors import ConfigError
from netshrink.core.registry import apply_, register
from netshrink.core.selection import LayerFilter
from netshrink.quant.kmeans1d import INITS, kmeans_1d
from netshrink.quant.layers import check_bits_setting, targets

MIN_CLUSTER_BITS, MAX_CLUSTER_BITS = 1, 8  # the codec's codebook holds at most 2**8 values


@dataclasses.dataclass(frozen=True)
class Cluster(Config):
    """Share weights: per layer, k-means with ``2**bits`` centroids, centroids trainable.

    Args:
        bits: index bits per weight, 1 to 8; or ``{layer name: bits}`` for mixed precision.
        init: centroid initialisation, Deep Compression section 3.2: ``"linear"`` (equally spaced
            between min and max; the paper's best), ``"density"`` (equally spaced on the CDF),
            ``"random"`` (k weights drawn at random); or ``"optimal"``, the exact clustering of
            least squared error (Ckmeans.1d.dp, Wang & Song 2011).
        seed: for ``init="random"``.
        filter_fn: ``filter_fn(module, name) -> bool`` picking among the Linear, Conv, Embedding and
            attention in-projection layers (default: all of them). Not logged; the log lists the
            layers clustered.

    Example:
        >>> cluster_(model, Cluster(bits=4, init="linear")); fit(model, data, FitConfig(epochs=1))
        >>> finalize_(model); save(model, "model.nsk")
    """

    LAYER_FIELDS = ("bits",)

    bits: int | dict[str, int] = 4
    init: str = "linear"
    seed: int = 0
    filter_fn: LayerFilter | None = unlogged()

    def __post_init__(self) -> None:
        check_bits_setting(self.bits, (), MIN_CLUSTER_BITS, MAX_CLUSTER_BITS)
        if self.init not in INITS:
            raise ConfigError(f"unknown init {self.init!r}; choose one of {list(INITS)}")


class SharedWeights(nn.Module):
    """The parametrization ``weight = codebook[index]``, codebook = trainable centroids then a
    fixed zero (index ``k`` marks a pruned weight). Its input, the original weight, is unused:
    the weights are tied to the centroids."""

    def __init__(self, centroids: torch.Tensor, index: torch.Tensor) -> None:
        super().__init__()
        self.centroids = nn.Parameter(centroids)
        self.register_buffer("index", index)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        codebook = torch.cat([self.centroids, self.centroids.new_zeros(1)])
        return codebook[self.index]


def share_weights(weight: torch.Tensor, bits: int, init: str, seed: int) -> tuple[SharedWeights, dict]:
    """The ``SharedWeights`` parametrization clustering ``weight`` (pruned zeros kept), and its
    log details. A weight with no more distinct nonzero values than ``bits`` allow clusters is
    shared exactly, each value its own centroid (no k-means). A weight pruned to all zeros gets an
    empty codebook: it stays zero under training."""
    nonzero = weight != 0
    kept = weight[nonzero]
    distinct_values = torch.unique(kept)
    allowed = 2**bits - int(not bool(nonzero.all()))  # zero takes a codebook entry of its own
    index = torch.zeros(weight.shape, dtype=torch.int64, device=weight.device)
    if distinct_values.numel() <= allowed:
        centroids = distinct_values
        index[nonzero] = torch.searchsorted(distinct_values, kept)
        inertia = 0.0
    else:
        clustering = kmeans_1d(kept.double().cpu().numpy(), allowed, init=init, seed=seed)
        index[nonzero] = torch.from_numpy(clustering.labels).to(weight.device)
        centroids = torch.from_numpy(clustering.centroids).to(weight.device, weight.dtype)
        inertia = clustering.inertia
    index[~nonzero] = centroids.numel()  # the fixed zero after the centroids
    details = {"bits": bits, "clusters": int(centroids.numel()), "pruned": int((~nonzero).sum()),
               "squared_error": inertia}
    return SharedWeights(centroids, index), details


def cluster_(model: nn.Module, config: Cluster) -> nn.Module:
    """Cluster ``model``'s weights in place (see ``Cluster``); logged. Returns the model."""
    return apply_(model, config)


def _check(model: nn.Module, record: dict) -> None:
    record_checks.layers(model, record.get("layers"))


@register(Cluster, "cluster", rebuild=None, check=_check, verb=cluster_)
def _cluster(model: nn.Module, config: Cluster) -> dict:
    chosen = targets(model, config.bits, config.filter_fn)
    layers, sharings = {}, []
    for name, module, tensor_name, bits in chosen:  # every layer clustered before any is changed
        weight = getattr(module, tensor_name).detach()
        sharing, layers[name] = share_weights(weight, bits, config.init, config.seed)
        sharings.append((module, tensor_name, sharing))
    for module, tensor_name, sharing in sharings:
        parametrize.register_parametrization(module, tensor_name, sharing)
    return {"layers": layers}


def centroids(model: nn.Module) -> Mapping[str, torch.Tensor]:
    """``{layer.tensor: centroids}`` of every clustered tensor still under training."""
    out = {}
    for name, module in model.named_modules():
        if parametrize.is_parametrized(module):
            for tensor_name, chain in module.parametrizations.items():
                for p in chain:
                    if isinstance(p, SharedWeights):
                        out[f"{name}.{tensor_name}" if name else tensor_name] = p.centroids.detach()
    return out
