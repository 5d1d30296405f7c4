"""Knowledge distillation (Hinton, Vinyals & Dean 2015): temperature, ensembles of teachers, cached
teacher logits, FitNets hints (Romero et al. 2015) and the omitted-class bias adjustment.

Names are imported lazily, so the CLI can declare ``netshrink distill`` without importing torch.
The package itself is callable as ``distill``: ``netshrink.distill`` names both this package and
the verb, and Python binds a parent package's attribute to its imported subpackage, so
``netshrink.distill(student, teacher, ...)`` must work whichever of the two it resolves to.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from netshrink.lazy_exports import lazy_getattr

_EXPORTS = {
    "Distill": "netshrink.distill.config",
    "distill": "netshrink.distill.teach",
    "distillation_loss": "netshrink.distill.loss",
    "soft_targets": "netshrink.distill.loss",
    "choose_class_bias": "netshrink.distill.bias",
    "raise_class_bias_": "netshrink.distill.bias",
    "without_classes": "netshrink.distill.bias",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS)


class _CallablePackage(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """``distill(...)``: see ``netshrink.distill.teach.distill``."""
        from netshrink.distill.teach import distill

        return distill(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
