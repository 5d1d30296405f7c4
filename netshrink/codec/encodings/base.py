"""What every tensor encoding shares: dtypes and bit patterns, streams, and the ``Encoding`` unit.

An encoding is one unit (one file): how it encodes a tensor's bit patterns, which streams it
writes, how it checks its parameters from an untrusted file, how long its raw streams are, how
many symbols its coded streams hold, how it decodes, and how much memory decoding takes. The
container and the validator only talk to units through this interface, so a new encoding (say,
per-channel quantization scales) is one new file plus one entry in ``ENCODINGS``.

Equality is on bit patterns: a tensor's elements are taken as little-endian integers of the same
width, so ``-0.0``, ``+0.0`` and every NaN payload are distinct values.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, ClassVar

import numpy as np
import torch

from netshrink.codec.bitpack import UNPACK_WORK_BYTES
from netshrink.codec.checks import checked_int
from netshrink.codec.entropy import decode_symbols, encode_symbols
from netshrink.core.errors import NetshrinkFormatError

#: dtype name in the file -> torch dtype. Nothing outside this table is read or written.
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
    "float64": torch.float64, "int64": torch.int64, "int32": torch.int32, "int16": torch.int16,
    "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool,
}
FLOAT_DTYPES = ("float32", "float16", "bfloat16", "float64")
#: stream kinds: raw bytes (length implied by shape and params), entropy-coded symbols, float planes
BYTES, SYMBOLS, FLOAT = "bytes", "symbols", "float"
#: bytes a decoder may allocate per decoded symbol besides its output (the coder's int32 output,
#: one cast, the histogram check), plus a fixed allowance for the chunked bit unpacking of packed
#: streams: counted in the decoded-bytes cap
WORK_BYTES_PER_SYMBOL = 16
FIXED_WORK_BYTES = UNPACK_WORK_BYTES
#: the Python and torch objects around the arrays of one decode
BOOKKEEPING_BYTES = 1 << 16
_BITS_TORCH = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
BITS_NUMPY = {1: np.dtype("<u1"), 2: np.dtype("<i2"), 4: np.dtype("<i4"), 8: np.dtype("<i8")}


def itemsize(dtype_name: str) -> int:
    return DTYPES[dtype_name].itemsize


def dtype_name(dtype: torch.dtype) -> str:
    for name, value in DTYPES.items():
        if value == dtype:
            return name
    raise ValueError(f"netshrink cannot store tensors of dtype {dtype}; convert to one of {list(DTYPES)}")


def tensor_bits(tensor: torch.Tensor) -> np.ndarray:
    """The tensor's elements as little-endian integers of the same width (its bit patterns), 1-D."""
    flat = tensor.detach().cpu().reshape(-1).contiguous()
    return flat.view(_BITS_TORCH[flat.element_size()]).numpy().astype(
        BITS_NUMPY[flat.element_size()], copy=False)


def bits_to_tensor(bits: np.ndarray, dtype_name_: str, shape: list[int], copy: bool = True) -> torch.Tensor:
    """Inverse of ``tensor_bits``. ``copy=False`` lets the tensor share a writeable ``bits`` array
    that nothing else holds (a freshly decoded one), instead of copying it."""
    size = itemsize(dtype_name_)
    native = np.ascontiguousarray(bits, dtype=BITS_NUMPY[size].newbyteorder("="))
    if copy or not native.flags.writeable:
        native = native.copy()
    return torch.from_numpy(native).view(DTYPES[dtype_name_]).reshape(shape)


def bits_from_bytes(data: bytes, dtype_name_: str) -> np.ndarray:
    return np.frombuffer(data, dtype=BITS_NUMPY[itemsize(dtype_name_)])


def json_bytes(value: Any) -> int:
    """Bytes ``value`` takes in a .nsk file: compact JSON, quoted once more as a safetensors
    metadata string (each ``"`` becomes ``\\"``)."""
    return len(json.dumps(json.dumps(value, separators=(",", ":")))) - 2


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


def symbol_stream(role: str, symbols: np.ndarray, alphabet: int, entropy: str) -> Stream:
    """Entropy-code an integer stream (``auto``: the method with the fewest stored bytes)."""
    method, payload, params = encode_symbols(symbols, alphabet, method=entropy)
    return Stream(role, bytes(payload), method, params)


def decode_symbol_stream(stream: Stream, count: int, alphabet: int) -> np.ndarray:
    """``count`` symbols in ``0 .. alphabet - 1`` (uint8 or uint16) from a coded stream."""
    symbols = np.asarray(decode_symbols(stream.method, stream.data, stream.params, count, alphabet)).reshape(-1)
    if symbols.size != count:
        raise NetshrinkFormatError(f"{stream.role}: decoded {symbols.size} symbols, expected {count}")
    if count and int(symbols.max()) >= alphabet:
        raise NetshrinkFormatError(f"{stream.role}: a symbol is outside 0..{alphabet - 1}")
    return symbols


def own_params(params: Any, name: str) -> dict[str, Any]:
    """An encoding's own entry ``params[name]`` of a tensor, which must be a JSON object."""
    own = params.get(name) if isinstance(params, dict) else None
    if not isinstance(own, dict):
        raise NetshrinkFormatError(f"params.{name} must be a JSON object, got {type(own).__name__}")
    return own


def param_int(params: dict[str, Any], name: str, key: str, low: int, high: int) -> int:
    """``params[name][key]``, an integer in ``low..high`` (format error otherwise)."""
    return checked_int(own_params(params, name).get(key), low, high, f"{name} {key}")


def param_group(params: dict[str, Any], name: str, shape: list[int], count: int) -> int:
    """``params[name]["group"]``: weights per group of a row (``weight.flatten(1)``'s), an integer
    that divides the row (format error otherwise); for the encodings with a grid per group."""
    row = count // shape[0]
    group = param_int(params, name, "group", 1, row)
    if row % group:
        raise NetshrinkFormatError(f"{name} group {group} does not divide the rows of {row}")
    return group


class Encoding:
    """One tensor encoding. Subclasses set the class attributes and override what they use.

    ``values``: it codes a flat list of ``count`` bit patterns (so it can also follow a ``wraps``
    encoding). ``wraps``: it stores positions, then the values with a value encoding whose streams
    are prefixed ``values.`` (sparse). Neither: it codes the whole tensor and needs its shape.
    ``roles`` maps each stream role to its kind, in file order.
    """

    name: ClassVar[str]
    roles: ClassVar[dict[str, str]]
    values: ClassVar[bool] = True
    wraps: ClassVar[bool] = False

    def encode(self, bits: np.ndarray, dtype: str, shape: list[int], entropy: str) -> Encoded | None:
        """An exact-or-None encoding of ``bits`` (1-D bit patterns of a tensor of ``shape``)."""
        raise NotImplementedError

    def check(self, params: dict[str, Any], dtype: str, shape: list[int], count: int) -> None:
        """Check this encoding's parameters from a file (``count`` values to decode)."""

    def raw_bytes(self, role: str, params: dict[str, Any], dtype: str, count: int) -> int:
        """The one length a raw (``BYTES``) stream of this encoding can have."""
        raise NotImplementedError

    def symbol_streams(self, params: dict[str, Any], count: int) -> dict[str, tuple[int, int]]:
        """Each ``SYMBOLS`` stream's ``(symbol count, alphabet size)``."""
        return {}

    def decode(self, params: dict[str, Any], streams: dict[str, Stream], dtype: str, shape: list[int],
               count: int) -> np.ndarray:
        """``count`` bit patterns (1-D) from the streams (already validated)."""
        raise NotImplementedError

    def work_bytes(self, params: dict[str, Any], dtype: str, count: int) -> int:
        """Most bytes decoding allocates at once: the output plus per-symbol intermediates."""
        symbols = sum(n for n, _ in self.symbol_streams(params, count).values())
        return (count * itemsize(dtype) + symbols * WORK_BYTES_PER_SYMBOL + BOOKKEEPING_BYTES
                + (FIXED_WORK_BYTES if symbols else 0))

    # A wrapper (``wraps``) encodes and decodes through a value encoding ``inner`` instead:

    def entries(self, params: dict[str, Any]) -> int:
        """How many values the wrapper stores (the inner encoding's ``count``)."""
        raise NotImplementedError

    def encode_with(self, bits: np.ndarray, dtype: str, entropy: str, inner: list[Encoding],
                    min_zeros: float | None = None) -> Encoded | None:
        raise NotImplementedError

    def decode_with(self, params: dict[str, Any], streams: dict[str, Stream], dtype: str, numel: int,
                    inner: Encoding) -> np.ndarray:
        raise NotImplementedError

    def work_bytes_with(self, params: dict[str, Any], dtype: str, numel: int, inner: Encoding) -> int:
        raise NotImplementedError

    def kept_and_crc(self, params: dict[str, Any], streams: dict[str, Stream], dtype: str, numel: int,
                     inner: Encoding) -> tuple[int, int]:
        """Nonzero count and CRC-32 of the decoded tensor, without expanding it."""
        raise NotImplementedError


def numel(shape: list[int]) -> int:
    return math.prod(shape)
