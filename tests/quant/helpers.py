"""Shared by the quantization tests: a model with an Embedding, save/load round trips."""

from __future__ import annotations

import torch
from torch import nn

import netshrink
from tests.models import NUM_CLASSES


class TokenClassifier(nn.Module):
    """A bag-of-tokens classifier over the 8x8 digits: each pixel (0..16) is a token id, so the
    token embedding holds most of the weights, as in a small BERT-style encoder."""

    def __init__(self, vocab: int = 17, dim: int = 16) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.hidden = nn.Linear(dim, 32)
        self.head = nn.Linear(32, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = (x.flatten(1) * 16).round().long().clamp(0, self.embed.num_embeddings - 1)  # (B, 64)
        return self.head(torch.relu(self.hidden(self.embed(tokens).mean(dim=1))))


def weight_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{layer: weight}`` of every Linear, Conv, Embedding and attention in-projection."""
    from netshrink.core.selection import select, weight_name
    from netshrink.quant.layers import QUANTIZABLE_LAYERS

    return {name: getattr(m, weight_name(m)).detach() for name, m in select(model, kinds=QUANTIZABLE_LAYERS).items()}


def distinct(tensor: torch.Tensor) -> int:
    return int(torch.unique(tensor).numel())


def round_trip(model: nn.Module, fresh: nn.Module, path) -> tuple[nn.Module, int]:
    """Save ``model`` (finalized) and load it back (into ``fresh`` for a user's own class)."""
    netshrink.save(model, path)
    arch = getattr(model, "netshrink_arch", None)
    loaded = netshrink.load(path) if arch is not None else netshrink.load(path, model=fresh)
    return loaded, path.stat().st_size
