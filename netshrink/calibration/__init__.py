"""Calibration data for post-training methods: batches of any model's inputs (tensors, dicts of
tensors, Datasets, DataLoaders), the layer-wise Hessian of a layer's inputs, and a block-by-block
run of the model that hands each layer's statistics to a solver (GPTQ, SparseGPT, Wanda).

Names are imported lazily, so importing the package does not import torch.
"""

from __future__ import annotations

from netshrink.lazy_exports import lazy_getattr

_EXPORTS = {
    "calibration_batches": "netshrink.calibration.batches",
    "LayerInputs": "netshrink.calibration.hessian",
    "layerwise": "netshrink.calibration.layerwise",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS)
