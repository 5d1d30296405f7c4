"""Knowledge distillation (Hinton, Vinyals & Dean 2015): temperature, ensembles of teachers, cached
teacher logits, FitNets hints (Romero et al. 2015), the omitted-class bias adjustment, and
recovery of a compressed model from the original on unlabeled data (``recover``).

Names are imported lazily, so the CLI can declare ``netshrink distill`` without importing torch.
The package is ``netshrink.distillation`` and the function ``netshrink.distill``: one name each,
so importing the package never shadows the function.
"""

from __future__ import annotations

from netshrink.lazy_exports import lazy_getattr

_EXPORTS = {
    "Distill": "netshrink.distillation.config",
    "Recover": "netshrink.distillation.config",
    "recover": "netshrink.distillation.recovery",
    "matching_loss": "netshrink.distillation.loss",
    "distill": "netshrink.distillation.teach",
    "distillation_loss": "netshrink.distillation.loss",
    "soft_targets": "netshrink.distillation.loss",
    "choose_class_bias": "netshrink.distillation.bias",
    "raise_class_bias_": "netshrink.distillation.bias",
    "without_classes": "netshrink.distillation.bias",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS)
