"""Detect what a tensor holds and store it in the cheapest encoding that reproduces it exactly.

The encodings are those of Deep Compression (Han et al. 2016): pruning leaves a sparse tensor
stored with a relative index (section 2), weight sharing leaves a codebook plus per-weight indices
(section 3), and every integer stream then goes through an entropy coder (section 4, Huffman; here
also ANS). Added to those: k-bit integers on an affine grid ``scale * (q - zero_point)`` (uniform
quantization), binary rows holding two values ``a_r, b_r`` (BinaryConnect / XNOR-Net scaled signs),
and lossless byte-plane coding of dense floats (ZipNN / DFloat11).

Detection looks at the tensor's *bits*: equality is on bit patterns, so ``-0.0``, ``+0.0`` and
every NaN payload are distinct values, and "zero" for the sparse index means the all-zero pattern.
Each candidate is encoded, then decoded and compared bit for bit before it may be chosen, so a
chosen encoding is exact by construction.

An encoding is a *chain*: ``[coder]`` or ``["sparse", coder]`` where the sparse stage stores the
positions and ``coder`` the stored values. Streams are named by role (``raw``, ``float``, ``q``,
``codebook``, ``indices``, ``row_values``, ``bits``, ``gaps``; the value streams of a sparse
tensor are prefixed ``values.``). Symbol streams carry their entropy method and its parameters.
``Encoded.describe`` is what the .nsk file records of an encoding, and ``Encoded.cost`` counts those
bytes with the payload, so the cheapest encoding is the cheapest in the file.
"""

from __future__ import annotations

import dataclasses
import json
import math
import zlib
from typing import Any

import numpy as np
import torch

from netshrink.codec.entropy import decode_symbols, encode_symbols
from netshrink.codec.float_bytes import decode_float_bytes, encode_float_bytes
from netshrink.codec.relative_index import (
    best_index_bits,
    relative_index_decode,
    relative_index_encode,
)
from netshrink.core.errors import NetshrinkFormatError

#: dtype name in the file -> torch dtype. Nothing outside this table is read or written.
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
    "float64": torch.float64, "int64": torch.int64, "int32": torch.int32, "int16": torch.int16,
    "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool,
}
FLOAT_DTYPES = ("float32", "float16", "bfloat16", "float64")
#: coders of the stored values (alone, or after "sparse")
VALUE_CODERS = ("dense", "float_bytes", "int", "codebook")
CHAINS: tuple[tuple[str, ...], ...] = (
    *((coder,) for coder in VALUE_CODERS), ("binary",),
    *(("sparse", coder) for coder in VALUE_CODERS),
)
MAX_CODEBOOK = 256  # codebook of at most 2**8 values
MAX_INT_BITS = 16
MAX_INDEX_BITS = 16
SPARSE_MIN_ZEROS = 0.3  # try the sparse index only when at least this fraction is zero
_BITS_TORCH = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_BITS_NUMPY = {1: np.dtype("<u1"), 2: np.dtype("<i2"), 4: np.dtype("<i4"), 8: np.dtype("<i8")}


@dataclasses.dataclass
class Stream:
    """One byte stream of an encoded tensor; ``method``/``params`` set for coded streams."""

    role: str
    data: bytes
    method: str | None = None
    params: dict[str, Any] | None = None

    def describe(self) -> dict[str, Any] | None:
        """The stream's entry in the file, ``{"n": bytes, "method", "params"}`` (empty params left
        out); None for a raw byte stream, whose length follows from the tensor's shape and params."""
        if self.method is None and self.params is None:
            return None
        info: dict[str, Any] = {"n": len(self.data)}
        if self.method is not None:
            info["method"] = self.method
        if self.params:
            info["params"] = self.params
        return info


@dataclasses.dataclass
class Encoded:
    """A chain, its per-coder parameters and its streams."""

    chain: list[str]
    params: dict[str, dict[str, Any]]
    streams: list[Stream]

    def describe(self) -> dict[str, Any]:
        """The encoding's fields of a tensor entry in the file, empty and default ones left out:
        ``chain`` as a name such as ``"sparse+codebook"`` (left out for ``"dense"``), ``params`` and
        the declared ``streams`` by role."""
        streams = {s.role: info for s in self.streams if (info := s.describe()) is not None}
        fields = {"chain": "+".join(self.chain), "params": self.params, "streams": streams}
        return {key: value for key, value in fields.items() if value not in ({}, "dense")}

    def cost(self) -> int:
        """Bytes in the file: the streams plus the encoding's part of the metadata."""
        return sum(len(s.data) for s in self.streams) + json_bytes(self.describe())


def json_bytes(value: Any) -> int:
    """Bytes ``value`` takes in a .nsk file: compact JSON, quoted once more as a safetensors
    metadata string (each ``"`` becomes ``\\"``)."""
    return len(json.dumps(json.dumps(value, separators=(",", ":")))) - 2


def itemsize(dtype_name: str) -> int:
    return DTYPES[dtype_name].itemsize


def tensor_bits(tensor: torch.Tensor) -> np.ndarray:
    """The tensor's elements as little-endian integers of the same width (its bit patterns), 1-D."""
    flat = tensor.detach().cpu().reshape(-1).contiguous()
    return flat.view(_BITS_TORCH[flat.element_size()]).numpy().astype(
        _BITS_NUMPY[flat.element_size()], copy=False)


def bits_to_tensor(bits: np.ndarray, dtype_name: str, shape: list[int], copy: bool = True) -> torch.Tensor:
    """Inverse of ``tensor_bits``. ``copy=False`` lets the tensor share a writeable ``bits`` array
    that nothing else holds (a freshly decoded one), instead of copying it."""
    size = itemsize(dtype_name)
    native = np.ascontiguousarray(bits, dtype=_BITS_NUMPY[size].newbyteorder("="))
    if copy or not native.flags.writeable:
        native = native.copy()
    return torch.from_numpy(native).view(DTYPES[dtype_name]).reshape(shape)


def dtype_name(dtype: torch.dtype) -> str:
    for name, value in DTYPES.items():
        if value == dtype:
            return name
    raise ValueError(f"netshrink cannot store tensors of dtype {dtype}; convert to one of {list(DTYPES)}")


def _bits_from_bytes(data: bytes, dtype_name_: str) -> np.ndarray:
    return np.frombuffer(data, dtype=_BITS_NUMPY[itemsize(dtype_name_)])


def _symbol_stream(role: str, symbols: np.ndarray, alphabet: int, entropy: str) -> Stream:
    """Entropy-code an integer stream (``auto``: the method with the fewest stored bytes)."""
    method, payload, params = encode_symbols(symbols, alphabet, method=entropy)
    return Stream(role, bytes(payload), method, params)


# --- value coders: 1-D bit patterns -> Encoded (chain of one coder) -----------------------------

def _encode_dense(bits: np.ndarray, dtype: str, entropy: str) -> Encoded:
    return Encoded(["dense"], {}, [Stream("raw", bits.tobytes())])


def _encode_float_bytes(bits: np.ndarray, dtype: str, entropy: str) -> Encoded | None:
    if dtype not in FLOAT_DTYPES or bits.size == 0:
        return None
    payload, params = encode_float_bytes(bits.view(f"<u{bits.itemsize}"), dtype)
    return Encoded(["float_bytes"], {}, [Stream("float", bytes(payload), None, params)])


def _encode_codebook(bits: np.ndarray, dtype: str, entropy: str) -> Encoded | None:
    codebook, indices = np.unique(bits, return_inverse=True)
    if codebook.size > MAX_CODEBOOK or bits.size == 0:
        return None
    size = int(codebook.size)
    return Encoded(["codebook"], {"codebook": {"size": size}}, [
        Stream("codebook", codebook.tobytes()),
        _symbol_stream("indices", indices.reshape(-1).astype(np.uint16), size, entropy),
    ])


def _affine_decode(q: np.ndarray, zero_point: int, scale: torch.Tensor) -> torch.Tensor:
    """``scale * (q - zero_point)`` in the tensor's own dtype (integers exact, one rounding)."""
    steps = torch.from_numpy(q.astype(np.int64) - zero_point).to(scale.dtype)
    return steps * scale


def _encode_int(bits: np.ndarray, dtype: str, entropy: str) -> Encoded | None:
    """Find ``scale, zero_point`` with ``values == scale * (q - zero_point)`` bit for bit."""
    if dtype not in FLOAT_DTYPES or bits.size == 0:
        return None
    values = bits_to_tensor(bits, dtype, [bits.size])
    if not bool(torch.isfinite(values).all()):
        return None
    unique = torch.unique(values.double())
    if unique.numel() < 2:
        return None
    step = float((unique[1:] - unique[:-1]).min())
    steps = torch.round(unique / step)
    if float(steps.abs().max()) >= 2 ** MAX_INT_BITS:
        return None
    far = int(steps.abs().argmax())
    guess = torch.tensor(float(unique[far] / steps[far]), dtype=torch.float64).to(DTYPES[dtype])
    candidates = [guess]
    for direction in (math.inf, -math.inf):
        scale = guess
        for _ in range(3):
            scale = torch.nextafter(scale, torch.tensor(direction, dtype=scale.dtype))
            candidates.append(scale)
    n = torch.round(values.double() / step).to(torch.int64).numpy()
    zero_point = -int(n.min())
    q = n + zero_point
    qbits = max(1, int(q.max()).bit_length())
    if qbits > MAX_INT_BITS:
        return None
    for scale in candidates:
        if not bool(torch.isfinite(scale)) or float(scale) == 0.0:
            continue
        if np.array_equal(tensor_bits(_affine_decode(q, zero_point, scale)), bits):
            params = {"bits": qbits, "zero_point": zero_point,
                      "scale": int(tensor_bits(scale.reshape(1))[0])}
            return Encoded(["int"], {"int": params}, [
                _symbol_stream("q", q.astype(np.uint16), 2 ** qbits, entropy)])
    return None


_VALUE_ENCODERS = {"dense": _encode_dense, "float_bytes": _encode_float_bytes,
                   "int": _encode_int, "codebook": _encode_codebook}


# --- whole-tensor coders -------------------------------------------------------------------------

def _rows(shape: list[int]) -> int | None:
    return shape[0] if len(shape) >= 2 and shape[0] > 0 else None


def _encode_binary(bits: np.ndarray, dtype: str, shape: list[int], entropy: str) -> Encoded | None:
    """Rows holding at most two distinct values ``a_r, b_r``: one bit per weight plus the pairs."""
    rows = _rows(shape)
    if dtype not in FLOAT_DTYPES or rows is None or bits.size == 0:
        return None
    matrix = bits.reshape(rows, -1)
    first = matrix[:, 0]
    is_second = matrix != first[:, None]
    second = np.where(is_second.any(axis=1), matrix[np.arange(rows), is_second.argmax(axis=1)], first)
    if not np.all(~is_second | (matrix == second[:, None])):
        return None
    row_values = np.stack([first, second], axis=1)  # (rows, 2)
    return Encoded(["binary"], {"binary": {"rows": rows}}, [
        Stream("row_values", row_values.tobytes()),
        _symbol_stream("bits", is_second.reshape(-1).astype(np.uint16), 2, entropy),
    ])


def _cheapest(candidates: list[Encoded | None]) -> Encoded:
    """Fewest bytes; ties go to the earlier candidate."""
    best = None
    for candidate in candidates:
        if candidate is not None and (best is None or candidate.cost() < best.cost()):
            best = candidate
    return best


def _encode_sparse(bits: np.ndarray, dtype: str, entropy: str,
                   value_coders: tuple[str, ...] = VALUE_CODERS,
                   min_zeros: float = SPARSE_MIN_ZEROS) -> Encoded | None:
    """Relative index of the nonzero patterns (Han et al. 2016 section 2), values coded after."""
    if bits.size == 0:
        return None
    positions = np.flatnonzero(bits != 0)
    if positions.size > (1 - min_zeros) * bits.size:
        return None
    distinct = np.unique(bits[positions]).size + 1
    value_bits = max(1, math.ceil(math.log2(distinct))) if distinct <= MAX_CODEBOOK else 8 * bits.itemsize
    index_bits = int(best_index_bits(positions, value_bits))
    gaps, entry_positions = relative_index_encode(positions, index_bits)
    values = bits[np.asarray(entry_positions, dtype=np.int64)]
    inner = _cheapest([_VALUE_ENCODERS[c](values, dtype, entropy) for c in value_coders])
    if inner is None:
        return None
    gap_stream = _symbol_stream("gaps", np.asarray(gaps).astype(np.uint16), 2 ** index_bits, entropy)
    streams = [gap_stream] + [dataclasses.replace(s, role="values." + s.role) for s in inner.streams]
    params = {"sparse": {"index_bits": index_bits, "entries": int(values.size)}, **inner.params}
    return Encoded(["sparse", *inner.chain], params, streams)


def parse_chain(name: str) -> tuple[str, ...]:
    """``"sparse+codebook"`` -> ``("sparse", "codebook")``; ``"sparse"`` means sparse + any coder."""
    return tuple(name.split("+"))


def encode_tensor(tensor: torch.Tensor, entropy: str = "auto", prefer: str | None = None) -> Encoded:
    """The cheapest exact encoding of ``tensor``, or the one ``prefer`` names if it is exact.

    ``prefer`` is a chain name such as ``"codebook"``, ``"int"``, ``"binary"``, ``"sparse"`` or
    ``"sparse+codebook"``; if that encoding cannot represent the tensor exactly, detection decides.
    """
    dtype = dtype_name(tensor.dtype)
    shape = list(tensor.shape)
    bits = tensor_bits(tensor)
    if dtype not in FLOAT_DTYPES:
        return _encode_dense(bits, dtype, entropy)  # integer buffers are stored as they are
    if prefer is not None:
        chosen = _encode_named(bits, dtype, shape, entropy, parse_chain(prefer))
        if chosen is not None and _exact(chosen, bits, dtype, shape):
            return chosen
    candidates = [_VALUE_ENCODERS[c](bits, dtype, entropy) for c in VALUE_CODERS]
    candidates += [_encode_binary(bits, dtype, shape, entropy), _encode_sparse(bits, dtype, entropy)]
    for candidate in sorted((c for c in candidates if c is not None), key=Encoded.cost):
        if _exact(candidate, bits, dtype, shape):
            return candidate
    raise AssertionError("dense encoding is always exact")  # unreachable: dense round-trips


def _encode_named(bits: np.ndarray, dtype: str, shape: list[int], entropy: str,
                  chain: tuple[str, ...]) -> Encoded | None:
    if chain == ("binary",):
        return _encode_binary(bits, dtype, shape, entropy)
    if chain[0] == "sparse" and len(chain) <= 2:
        coders = chain[1:] if len(chain) == 2 else VALUE_CODERS
        if not set(coders) <= set(VALUE_CODERS):
            return None
        return _encode_sparse(bits, dtype, entropy, tuple(coders), min_zeros=0.0)
    if len(chain) == 1 and chain[0] in _VALUE_ENCODERS:
        return _VALUE_ENCODERS[chain[0]](bits, dtype, entropy)
    return None


def _exact(encoded: Encoded, bits: np.ndarray, dtype: str, shape: list[int]) -> bool:
    streams = {s.role: s for s in encoded.streams}
    decoded = decode_streams(encoded.chain, encoded.params, streams, dtype, shape)
    return np.array_equal(tensor_bits(decoded), bits)


# --- decoding ------------------------------------------------------------------------------------

def _decode_symbols(stream: Stream, count: int, alphabet: int, what: str) -> np.ndarray:
    symbols = np.asarray(decode_symbols(stream.method, stream.data, stream.params, count, alphabet))
    symbols = symbols.reshape(-1)
    if symbols.size != count:
        raise NetshrinkFormatError(f"{what}: decoded {symbols.size} symbols, expected {count}")
    if count and (int(symbols.min()) < 0 or int(symbols.max()) >= alphabet):
        raise NetshrinkFormatError(f"{what}: a symbol is outside 0..{alphabet - 1}")
    return symbols.astype(np.int64)


def _decode_values(coder: str, params: dict[str, Any], streams: dict[str, Stream], prefix: str,
                   dtype: str, count: int) -> np.ndarray:
    """``count`` bit patterns from a value coder's streams."""
    size = itemsize(dtype)
    if coder == "dense":
        data = streams[prefix + "raw"].data
        if len(data) != count * size:
            raise NetshrinkFormatError(f"dense stream holds {len(data)} bytes, expected {count * size}")
        return _bits_from_bytes(data, dtype)
    if coder == "float_bytes":
        stream = streams[prefix + "float"]
        values = np.asarray(decode_float_bytes(stream.data, stream.params, count, dtype)).reshape(-1)
        if values.size != count or values.itemsize != size:
            raise NetshrinkFormatError("float_bytes stream decoded to the wrong size")
        return values.view(_BITS_NUMPY[size].newbyteorder("="))
    if coder == "codebook":
        book_size = params["codebook"]["size"]
        book = streams[prefix + "codebook"].data
        if len(book) != book_size * size:
            raise NetshrinkFormatError(f"codebook holds {len(book)} bytes, expected {book_size * size}")
        indices = _decode_symbols(streams[prefix + "indices"], count, book_size, "indices")
        if count and int(indices.max()) >= book_size:
            raise NetshrinkFormatError(f"an index is >= the codebook size {book_size}")
        return _bits_from_bytes(book, dtype)[indices]
    if coder == "int":
        info = params["int"]
        q = _decode_symbols(streams[prefix + "q"], count, 2 ** info["bits"], "q")
        scale = bits_to_tensor(np.array([info["scale"]]).astype(_BITS_NUMPY[size]), dtype, [])
        return tensor_bits(_affine_decode(q, info["zero_point"], scale))
    raise NetshrinkFormatError(f"unknown value coder {coder!r}")


def decode_sparse_entries(chain: list[str], params: dict[str, Any], streams: dict[str, Stream],
                          dtype: str, numel: int) -> tuple[np.ndarray, np.ndarray]:
    """The flat positions (int64, strictly increasing) and bit patterns of a sparse tensor's
    entries, fillers included: memory in the number of entries, never in ``numel``."""
    info = params["sparse"]
    gaps = _decode_symbols(streams["gaps"], info["entries"], 2 ** info["index_bits"], "gaps")
    positions = np.asarray(relative_index_decode(gaps, numel), dtype=np.int64).reshape(-1)
    del gaps
    if positions.size != info["entries"] or (positions.size and (
            positions[0] < 0 or positions[-1] >= numel)):  # gaps >= 0: increasing
        raise NetshrinkFormatError("sparse index points outside the tensor")
    values = _decode_values(chain[1], params, streams, "values.", dtype, positions.size)
    return positions, values


def sparse_kept_and_crc(chain: list[str], params: dict[str, Any], streams: dict[str, Stream],
                        dtype: str, numel: int, chunk: int = 1 << 20) -> tuple[int, int]:
    """Nonzero count and CRC-32 of a sparse tensor's decoded bytes without ever holding the dense
    tensor: the zeros between entries are checksummed ``chunk`` elements at a time."""
    positions, values = decode_sparse_entries(chain, params, streams, dtype, numel)
    kept = int(np.count_nonzero(values))
    crc = 0
    size = itemsize(dtype)
    buffer = np.zeros(min(chunk, numel), dtype=_BITS_NUMPY[size])
    bounds = np.searchsorted(positions, np.arange(0, numel + chunk, chunk))
    for index, start in enumerate(range(0, numel, chunk)):
        piece = buffer[: min(chunk, numel - start)]
        lo, hi = int(bounds[index]), int(bounds[index + 1])
        piece[positions[lo:hi] - start] = values[lo:hi]
        crc = zlib.crc32(piece, crc)  # little-endian dtype: the file's byte order
        piece[positions[lo:hi] - start] = 0
    return kept, crc


def decode_streams(chain: list[str], params: dict[str, Any], streams: dict[str, Stream],
                   dtype: str, shape: list[int]) -> torch.Tensor:
    """Rebuild a tensor from its chain, parameters and streams (already validated)."""
    numel = math.prod(shape)
    if chain == ["binary"]:
        rows = params["binary"]["rows"]
        pairs = _bits_from_bytes(streams["row_values"].data, dtype).reshape(rows, 2)
        which = _decode_symbols(streams["bits"], numel, 2, "bits").reshape(rows, -1)
        bits = np.take_along_axis(pairs, which, axis=1).reshape(-1) if numel else pairs[:0, 0]
    elif chain[0] == "sparse":
        positions, values = decode_sparse_entries(chain, params, streams, dtype, numel)
        bits = np.zeros(numel, dtype=_BITS_NUMPY[itemsize(dtype)])  # lazily zeroed pages
        bits[positions] = values
        del positions, values
    else:
        bits = _decode_values(chain[0], params, streams, "", dtype, numel)
    # a freshly decoded array becomes the tensor as it is; read-only stream bytes are copied
    return bits_to_tensor(bits, dtype, shape, copy=not bits.flags.writeable)
