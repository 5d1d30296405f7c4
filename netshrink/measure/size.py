"""Sizes: parameter counts, nonzeros, and the byte count of real files."""

from __future__ import annotations

import json
import math

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
    Measuring): the size of the file safetensors writes for it (computed exactly, see
    ``fp32_safetensors_bytes``). Floats are counted as fp32 whatever their dtype; integer buffers
    keep theirs.
    """
    return fp32_safetensors_bytes({name: (list(t.shape), t.is_floating_point(), t.dtype)
                                   for name, t in model.state_dict().items()})


#: safetensors' dtype names in the order of its ``Dtype`` enum; it lays tensors out by this order
#: (descending), then by name, and that order fixes the offsets written in the header
_SAFETENSORS_DTYPE_ORDER = ("BOOL", "U8", "I8", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "F64",
                            "I64", "U64")
_SAFETENSORS_DTYPES = {
    torch.bool: ("BOOL", 1), torch.uint8: ("U8", 1), torch.int8: ("I8", 1), torch.int16: ("I16", 2),
    torch.float16: ("F16", 2), torch.bfloat16: ("BF16", 2), torch.int32: ("I32", 4), torch.float32: ("F32", 4),
    torch.float64: ("F64", 8), torch.int64: ("I64", 8),
}


def fp32_safetensors_bytes(layout: dict[str, tuple[list[int], bool, torch.dtype]]) -> int:
    """Exact byte count of the dense safetensors file of ``name: (shape, is_float, dtype)`` tensors,
    floats as fp32, worked out from the format instead of writing it.

    A file's declared shapes are untrusted (``netshrink inspect`` reports against this size), so
    nothing of the dense size is allocated: the file is 8 bytes of header length, the JSON header
    padded with spaces to a multiple of 8, then the data. A test checks this against files that
    safetensors really writes.
    """
    entries = []
    for name, (shape, is_float, dtype) in layout.items():
        code, itemsize = _SAFETENSORS_DTYPES[torch.float32 if is_float else dtype]
        entries.append((name, code, [int(d) for d in shape], itemsize * math.prod(shape)))
    entries.sort(key=lambda e: (-_SAFETENSORS_DTYPE_ORDER.index(e[1]), e[0].encode()))
    header, offset = {}, 0
    for name, code, shape, nbytes in entries:
        header[name] = {"dtype": code, "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    return 8 + -(-len(text) // 8) * 8 + offset
