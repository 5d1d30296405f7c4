"""Batch augmentations as tensor ops, seeded by a ``torch.Generator`` so resumed runs repeat."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, pad: int = 2,
                     flip: bool = True) -> torch.Tensor:
    """Random ``pad``-pixel translation (zero-padded crop) and horizontal flip of a batch (B, C, H, W)."""
    batch, _, height, width = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (batch,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (batch,), generator=generator)
    rows = (dy[:, None] + torch.arange(height)[None, :])  # (B, H)
    cols = (dx[:, None] + torch.arange(width)[None, :])  # (B, W)
    out = padded[torch.arange(batch)[:, None, None, None], torch.arange(x.shape[1])[None, :, None, None],
                 rows[:, None, :, None], cols[:, None, None, :]]
    if flip:
        mask = torch.rand(batch, generator=generator) < 0.5
        out = torch.where(mask[:, None, None, None], out.flip(-1), out)
    return out
