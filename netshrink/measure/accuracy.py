"""Accuracy of a classifier on a split, batched, in eval mode, without gradients."""

from __future__ import annotations

import torch
from torch import nn

from netshrink.data.dataset import Split


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 1024,
                   device: str | torch.device = "cpu") -> torch.Tensor:
    """Logits for every row of ``x`` (eval mode restored to the caller's mode afterwards)."""
    was_training = model.training
    model.eval()
    try:
        outs = [model(x[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(outs) if outs else torch.empty(0)


def evaluate(model: nn.Module, split: Split, batch_size: int = 1024,
             device: str | torch.device = "cpu") -> float:
    """Top-1 accuracy in [0, 1]."""
    logits = predict_logits(model, split.x, batch_size, device)
    return float((logits.argmax(1) == split.y).float().mean())
