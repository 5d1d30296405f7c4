"""Sizes: parameter counts, nonzeros, and the byte count of real files."""

from __future__ import annotations

import dataclasses
import json
import math

import torch
from torch import nn

from netshrink.core.transform_log import get_log

#: the model attribute holding its original dense fp32 bytes (``remember_original_size``)
ORIGINAL_ATTR = "netshrink_original_fp32_bytes"


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (every element of every ``nn.Parameter``)."""
    return sum(p.numel() for p in model.parameters())


def count_nonzero(model: nn.Module) -> int:
    """Number of parameters that are not exactly zero (what sparsity really saves)."""
    return sum(int(torch.count_nonzero(p.detach())) for p in model.parameters())


def dense_fp32_bytes(model: nn.Module) -> int:
    """Byte count of the model's state dict written as a dense fp32 safetensors file.

    The size of the file safetensors writes for it (computed exactly, see
    ``fp32_safetensors_bytes``). Floats are counted as fp32 whatever their dtype; integer buffers
    keep theirs. Of the original model (before its first transform) this is the baseline every
    compression rate is measured against (``fp32_baseline``).
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


def remember_original_size(model: nn.Module) -> None:
    """Record ``dense_fp32_bytes(model)`` as the model's original size, once, while the model is
    still untouched (nothing in its transform log): ``apply_`` calls this before the first
    technique runs and ``save`` before it writes, and the .nsk file carries the number on."""
    if getattr(model, ORIGINAL_ATTR, None) is None and not get_log(model):
        set_original_size(model, dense_fp32_bytes(model))


def set_original_size(model: nn.Module, nbytes: int | None) -> None:
    """Set (the loader: what the file records) or clear (None) the model's original size."""
    object.__setattr__(model, ORIGINAL_ATTR, None if nbytes is None else int(nbytes))


def original_size(model: nn.Module) -> int | None:
    """The model's recorded original dense fp32 bytes, or None (a file written before netshrink
    recorded it)."""
    return getattr(model, ORIGINAL_ATTR, None)


@dataclasses.dataclass(frozen=True)
class Baseline:
    """The dense fp32 bytes a compression rate is against, and whether they are the original
    model's (recorded before any compression) or, for a file that predates the record, the
    current model's own state dict written dense (labelled as such)."""

    nbytes: int
    original: bool

    def describe(self) -> str:
        if self.original:
            return f"original dense fp32 {self.nbytes:,} B"
        return f"dense fp32 of this model {self.nbytes:,} B (the file predates recording the original size)"

    def rate(self, file_bytes: int) -> float:
        return self.nbytes / max(file_bytes, 1)

    def versus(self, file_bytes: int) -> str:
        """``"28,148 B vs original dense fp32 1,066,896 B = 37.9x smaller"``."""
        return f"{file_bytes:,} B vs {self.describe()} = {self.rate(file_bytes):.1f}x smaller"


def fp32_baseline(model: nn.Module) -> Baseline:
    """The one baseline of every compression rate netshrink reports: the original model's dense
    fp32 safetensors bytes (recorded on the model, carried in its .nsk file); an untouched model
    is its own original; a model loaded from a file without the record falls back to its own
    dense fp32 bytes, labelled."""
    recorded = original_size(model)
    if recorded is not None:
        return Baseline(recorded, True)
    return Baseline(dense_fp32_bytes(model), not get_log(model))
