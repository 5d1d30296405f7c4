"""Sizes: parameter counts, nonzeros, and the byte count of real files."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (every element of every ``nn.Parameter``)."""
    return sum(p.numel() for p in model.parameters())


def count_nonzero(model: nn.Module) -> int:
    """Number of parameters that are not exactly zero (what sparsity really saves)."""
    return sum(int(torch.count_nonzero(p.detach())) for p in model.parameters())


def dense_fp32_bytes(model: nn.Module) -> int:
    """Byte count of the model's state dict written as a dense fp32 safetensors file.

    This is the baseline every compression rate in netshrink is measured against: a real file,
    written to a temporary folder and measured with ``os.path.getsize``.
    """
    tensors = {
        name: (t.detach().float() if t.is_floating_point() else t.detach()).contiguous().cpu()
        for name, t in model.state_dict().items()
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "dense.safetensors"
        save_file(tensors, str(path))
        return os.path.getsize(path)


def file_bytes(path: str | os.PathLike) -> int:
    """Byte count of a file on disk."""
    return os.path.getsize(path)
