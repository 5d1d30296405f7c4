"""Repair after a conversion: re-estimated BatchNorm statistics, then fine-tuning distilled from the original.

A converted layer computes an approximation of the trained one, so the BatchNorm layers after it
see inputs of another mean and variance than their running statistics hold; across a deep stack
that alone can bring accuracy to chance. Re-estimating the statistics on a few training batches
(no gradient, no weight changes; ``torch.optim.swa_utils.update_bn``) is the cheap first repair.
Then the model is fine-tuned; the original model is the natural teacher (Hinton et al. 2015), whose
soft targets carry more per example than the labels. Without ``netshrink.distillation``, plain
fine-tuning on labels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import update_bn

from netshrink.data import Dataset
from netshrink.train import FitConfig, FitResult, fit

#: training images BatchNorm statistics are re-estimated on
BATCHNORM_SAMPLES = 2048


def reestimate_batchnorm_(model: nn.Module, x: torch.Tensor, samples: int = BATCHNORM_SAMPLES, seed: int = 0,
                          batch_size: int = 256) -> nn.Module:
    """Reset and re-estimate every BatchNorm's running statistics on ``samples`` images drawn from
    ``x`` (seeded), in place; weights untouched, training mode kept. Returns the model."""
    chosen = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:samples]
    device = next(model.parameters()).device
    with torch.no_grad():
        update_bn([x[chosen[i:i + batch_size]] for i in range(0, len(chosen), batch_size)], model, device=device)
    return model


def finetune(model: nn.Module, original: nn.Module, data: Dataset, config: FitConfig, distill_config: Any = None,
             out_dir: str | Path | None = None, progress: bool = False, device: str = "cpu") -> tuple[FitResult, str]:
    """Train the converted ``model`` in place, distilled from ``original`` (``distill_config``: a
    ``netshrink.distillation.Distill``, default ``Distill()``); returns ``fit``'s result and ``"distill"``
    or, where ``netshrink.distillation`` is missing, ``"fit"`` (labels only)."""
    try:
        from netshrink.distillation import Distill
        from netshrink.distillation.teach import distill
    except ImportError:
        return fit(model, data, config, out_dir=out_dir, progress=progress, device=device), "fit"
    result = distill(model, original, data, distill_config or Distill(), config, out_dir=out_dir, progress=progress,
                     device=device)
    return result, "distill"
