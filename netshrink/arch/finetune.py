"""Fine-tuning after a conversion: distilled from the original model where distillation is available.

A converted layer starts at the best factorization of the trained one, not at it, so the model is
fine-tuned; the original model is the natural teacher (Hinton et al. 2015), whose soft targets
carry more per example than the labels. Without ``netshrink.distill``, plain fine-tuning on labels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from netshrink.data import Dataset
from netshrink.train import FitConfig, FitResult, fit


def finetune(model: nn.Module, original: nn.Module, data: Dataset, config: FitConfig, distill_config: Any = None,
             out_dir: str | Path | None = None, progress: bool = False, device: str = "cpu") -> tuple[FitResult, str]:
    """Train the converted ``model`` in place, distilled from ``original`` (``distill_config``: a
    ``netshrink.distill.Distill``, default ``Distill()``); returns ``fit``'s result and ``"distill"``
    or, where ``netshrink.distill`` is missing, ``"fit"`` (labels only)."""
    try:
        from netshrink.distill import Distill
        from netshrink.distill.teach import distill
    except ImportError:
        return fit(model, data, config, out_dir=out_dir, progress=progress, device=device), "fit"
    result = distill(model, original, data, distill_config or Distill(), config, out_dir=out_dir, progress=progress,
                     device=device)
    return result, "distill"
