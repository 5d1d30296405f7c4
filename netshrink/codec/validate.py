"""Validate a .nsk metadata document against the stream data present, before anything is decoded.

Order of checks, after safetensors' own header validation (huggingface/safetensors ``validate``):
the document is a JSON object of a known ``format_version`` with a ``stream_crc``; the
architecture is absent, null or a zoo name with keyword arguments; every tensor names a known
dtype, a shape of non-negative ints with at most ``MAX_NUMEL`` elements, a known encoding chain
with in-range parameters, and declares exactly the coded streams that chain needs (raw byte
streams are implied by shape and params). Stream lengths are laid end to end in document order,
overflow-safe as in safetensors: no stream reaches past the end of the stream data, and together
they cover it exactly (no gap, no overlap, no trailing bytes). Finally the decoded total is
bounded by ``MAX_TOTAL_BYTES``. Each failure is one ``NetshrinkFormatError`` with a one-line
reason.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from netshrink.codec.entropy import METHODS
from netshrink.codec.tensor_encodings import (
    CHAINS,
    DTYPES,
    MAX_CODEBOOK,
    MAX_INDEX_BITS,
    MAX_INT_BITS,
    itemsize,
)
from netshrink.core.errors import NetshrinkFormatError

FORMAT_VERSION = 2
METADATA_KEY = "netshrink"
#: the file's one uint8 tensor: every stream, end to end
STREAMS_KEY = "streams"
MAX_NUMEL = 2 ** 31
MAX_TOTAL_BYTES = 2 ** 36  # 64 GiB of decoded tensors
#: role -> stream kind ("bytes": raw, "symbols": entropy-coded integers, "float": float_bytes)
CODER_ROLES: dict[str, dict[str, str]] = {
    "dense": {"raw": "bytes"}, "float_bytes": {"float": "float"}, "int": {"q": "symbols"},
    "codebook": {"codebook": "bytes", "indices": "symbols"},
    "binary": {"row_values": "bytes", "bits": "symbols"}, "sparse": {"gaps": "symbols"},
}


@dataclasses.dataclass
class StreamSpec:
    kind: str
    offset: int
    nbytes: int
    method: str | None
    params: dict[str, Any] | None


@dataclasses.dataclass
class TensorSpec:
    name: str
    dtype: str
    shape: list[int]
    chain: list[str]
    params: dict[str, dict[str, Any]]
    streams: dict[str, StreamSpec]
    crc: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def chain_roles(chain: list[str]) -> dict[str, str]:
    """Every stream role a chain needs, with its kind."""
    if chain[0] == "sparse":
        inner = CODER_ROLES[chain[1]]
        return {**CODER_ROLES["sparse"], **{"values." + r: k for r, k in inner.items()}}
    return dict(CODER_ROLES[chain[0]])


def _fail(reason: str) -> None:
    raise NetshrinkFormatError(reason)


def _int(value: Any, low: int, high: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        _fail(f"{what} must be an integer in {low}..{high}, got {str(value)[:40]!r}")
    return value


def _dict(value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        _fail(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def parse_metadata(metadata: dict[str, str] | None) -> dict[str, Any]:
    """The JSON document from the safetensors string metadata, with the fields the writer leaves
    out when empty filled in (``architecture``: None, ``transform_log``: [])."""
    if not metadata or METADATA_KEY not in metadata:
        _fail("not a netshrink file: the safetensors metadata has no 'netshrink' document")
    try:
        doc = json.loads(metadata[METADATA_KEY])
    except (ValueError, RecursionError) as error:
        raise NetshrinkFormatError(f"metadata is not valid JSON ({error})") from None
    doc = _dict(doc, "metadata document")
    version = doc.get("format_version")
    if version != FORMAT_VERSION:
        _fail(f"unknown format_version {str(version)[:40]!r}; this netshrink reads version "
              f"{FORMAT_VERSION} only (a newer file needs a newer netshrink)")
    arch = doc.setdefault("architecture", None)
    if arch is not None:
        arch = _dict(arch, "architecture")
        if not isinstance(arch.get("name"), str):
            _fail("architecture.name must be a string")
        _dict(arch.get("kwargs"), "architecture.kwargs")
    if not isinstance(doc.setdefault("transform_log", []), list):
        _fail("transform_log must be a list")
    _dict(doc.get("tensors"), "tensors")
    _int(doc.get("stream_crc"), 0, 2 ** 32 - 1, "stream_crc")
    return doc


def _coder_params(coder: str, params: dict, dtype: str, shape: list[int]) -> None:
    p = _dict(params.get(coder), f"params.{coder}")
    bits_range = 2 ** (8 * itemsize(dtype) - 1)
    if coder == "int":
        _int(p.get("bits"), 1, MAX_INT_BITS, "int bits")
        _int(p.get("zero_point"), -(2 ** (MAX_INT_BITS + 1)), 2 ** (MAX_INT_BITS + 1), "int zero_point")
        _int(p.get("scale"), -bits_range, bits_range - 1, "int scale")
    elif coder == "codebook":
        _int(p.get("size"), 1, MAX_CODEBOOK, "codebook size")
    elif coder == "binary":
        if len(shape) < 2:
            _fail("binary encoding needs a tensor of at least 2 dimensions")
        _int(p.get("rows"), shape[0], shape[0], "binary rows")
    elif coder == "sparse":
        _int(p.get("index_bits"), 1, MAX_INDEX_BITS, "sparse index_bits")
        _int(p.get("entries"), 0, math.prod(shape), "sparse entries")


def _expected_bytes(role: str, spec_params: dict, dtype: str, shape: list[int]) -> int | None:
    """Exact length of raw byte streams (None where the length is the coder's own business)."""
    size = itemsize(dtype)
    values = spec_params["sparse"]["entries"] if role.startswith("values.") else math.prod(shape)
    base = role.removeprefix("values.")
    if base == "raw":
        return values * size
    if base == "codebook":
        return spec_params["codebook"]["size"] * size
    if base == "row_values":
        return 2 * spec_params["binary"]["rows"] * size
    return None


def _parse_chain(name: str, chain: Any) -> list[str]:
    """``"sparse+codebook"`` -> ``["sparse", "codebook"]``, a known chain or a format error."""
    parts = chain.split("+") if isinstance(chain, str) else None
    if parts is None or tuple(parts) not in CHAINS:
        _fail(f"tensor {name!r} has unknown encoding {str(chain)[:60]!r}")
    return parts


def validate_tensor(name: str, entry: Any, offset: int, data_bytes: int) -> TensorSpec:
    """One tensor's entry; its streams start at ``offset`` of the ``data_bytes`` of stream data."""
    entry = _dict(entry, f"tensor {name!r}")
    dtype = entry.get("dtype", "float32")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        _fail(f"tensor {name!r} has unknown dtype {str(dtype)[:40]!r}")
    shape = entry.get("shape")
    if not isinstance(shape, list) or len(shape) > 8:
        _fail(f"tensor {name!r} shape must be a list of at most 8 integers")
    for dim in shape:
        _int(dim, 0, MAX_NUMEL, f"tensor {name!r} shape entry")
    if math.prod(shape) > MAX_NUMEL:
        _fail(f"tensor {name!r} declares {math.prod(shape)} elements, more than {MAX_NUMEL}")
    chain = _parse_chain(name, entry.get("chain", "dense"))
    params = _dict(entry.get("params", {}), f"tensor {name!r} params")
    for coder in chain:
        if coder in ("int", "codebook", "binary", "sparse"):
            _coder_params(coder, params, dtype, shape)
    declared = _dict(entry.get("streams", {}), f"tensor {name!r} streams")
    roles = chain_roles(chain)
    coded = [role for role, kind in roles.items() if kind != "bytes"]
    if set(declared) != set(coded):
        _fail(f"tensor {name!r} declares streams {sorted(declared)[:8]}, its encoding needs "
              f"{sorted(coded)}")
    streams = {}
    for role, kind in roles.items():
        what = f"stream {name}:{role}"
        if kind == "bytes":  # raw bytes: the length follows from shape and params
            nbytes, method, stream_params = _expected_bytes(role, params, dtype, shape), None, None
        else:
            info = _dict(declared[role], what)
            nbytes = _int(info.get("n"), 0, 2 ** 63, f"{what} length")
            method = info.get("method")
            if kind == "symbols" and method not in METHODS:
                _fail(f"{what} has unknown entropy method {str(method)[:40]!r}")
            method = method if kind == "symbols" else None
            stream_params = _dict(info.get("params", {}), f"{what} params")
        if nbytes > data_bytes - offset:  # Python ints: no overflow, but no huge offsets either
            _fail(f"{what} declares {nbytes} bytes at offset {offset}, past the end of the "
                  f"{data_bytes} bytes of stream data")
        streams[role] = StreamSpec(kind, offset, nbytes, method, stream_params)
        offset += nbytes
    crc = _int(entry.get("crc"), 0, 2 ** 32 - 1, f"tensor {name!r} crc")
    return TensorSpec(name, dtype, list(shape), chain, params, streams, crc)


def validate_document(doc: dict[str, Any], data_bytes: int) -> dict[str, TensorSpec]:
    """Every tensor spec of a parsed document; the streams, end to end in document order, must
    cover the ``data_bytes`` of stream data exactly. Also bounds the decoded total size."""
    specs: dict[str, TensorSpec] = {}
    offset = 0
    for name, entry in doc["tensors"].items():
        spec = specs[name] = validate_tensor(name, entry, offset, data_bytes)
        offset += sum(s.nbytes for s in spec.streams.values())
    if offset != data_bytes:
        _fail(f"the streams declare {offset} bytes in all, the file holds {data_bytes} bytes of "
              f"stream data")
    total = sum(spec.numel * itemsize(spec.dtype) for spec in specs.values())
    if total > MAX_TOTAL_BYTES:
        _fail(f"decoded tensors would take {total} bytes, more than the {MAX_TOTAL_BYTES} cap")
    return specs
