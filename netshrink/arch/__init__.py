"""Architecture design: depthwise separable conversion, low-rank factorization, efficient blocks.

``separable_(model, Separable(multiplier=m))`` and ``low_rank_(model, LowRank(rank= | energy= |
param_ratio=))`` replace trained layers by SVD-initialised factorizations (logged, so ``save`` /
``load`` restore the new structure); ``blocks`` holds the MobileNet v1, ShuffleNet and Ghost blocks
that the zoo students ``mobilenet_tiny``, ``shufflenet_tiny`` and ``ghostnet_tiny`` stack.
Names are imported lazily, so importing the package does not import torch.
"""

from __future__ import annotations

from netshrink.lazy_exports import lazy_getattr

_EXPORTS = {
    "Separable": "netshrink.arch.separable",
    "separable_": "netshrink.arch.separable",
    "LowRank": "netshrink.arch.low_rank",
    "low_rank_": "netshrink.arch.low_rank",
    "DepthwiseSeparable": "netshrink.arch.blocks",
    "ShuffleUnit": "netshrink.arch.blocks",
    "GhostModule": "netshrink.arch.blocks",
    "GhostBottleneck": "netshrink.arch.blocks",
    "channel_shuffle": "netshrink.arch.blocks",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS)
