"""Sizes: parameter counts, nonzeros, and the byte count of real files."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import safetensors.numpy
import torch
from torch import nn


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (every element of every ``nn.Parameter``)."""
    return sum(p.numel() for p in model.parameters())


def count_nonzero(model: nn.Module) -> int:
    """Number of parameters that are not exactly zero (what sparsity really saves)."""
    return sum(int(torch.count_nonzero(p.detach())) for p in model.parameters())


def dense_fp32_bytes(model: nn.Module) -> int:
    """Byte count of the model's state dict written as a dense fp32 safetensors file.

    This is the baseline every compression rate in netshrink is measured against (DESIGN.md,
    Measuring): a real file, written to a temporary folder and measured. Floats are counted as
    fp32 whatever their dtype; integer buffers keep theirs.
    """
    return fp32_safetensors_bytes({name: (list(t.shape), t.is_floating_point(), t.dtype)
                                   for name, t in model.state_dict().items()})


def fp32_safetensors_bytes(layout: dict[str, tuple[list[int], bool, torch.dtype]]) -> int:
    """Size of a dense safetensors file of zeros with the given ``name: (shape, is_float, dtype)``."""
    arrays = {name: np.zeros(shape, dtype=np.float32 if is_float else torch.empty((), dtype=dtype).numpy().dtype)
              for name, (shape, is_float, dtype) in layout.items()}
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "dense.safetensors"
        safetensors.numpy.save_file(arrays, str(target))
        return os.path.getsize(target)


def file_bytes(path: str | os.PathLike) -> int:
    """Byte count of a file on disk."""
    return os.path.getsize(path)
