"""Lossless coding of dense float tensors by field planes (the ZipNN and DFloat11 observation).

The exponent of trained weights takes few distinct values: ZipNN (Hershcovitch et al. 2024,
section 3, "byte grouping") and DFloat11 (Zhang et al. 2025, section 2) find about 2.6 bits of
entropy in the 8-bit exponent of bf16/fp32 weights, while sign and mantissa are near uniform.
So each value is split into fields: the exponent (one plane, alphabet ``2**exponent_bits``) and
the sign with the mantissa (planes of 8 bits, least significant first). Each plane is entropy
coded (``entropy.encode_symbols``), or kept packed raw when no coder beats that. The round trip
is bit-identical, NaN payloads and signed zeros included.

A tensor of more than ``CHUNK`` values is coded in chunks of ``CHUNK`` values, each with its own
planes (ZipNN, section 4, also codes independent chunks): memory holds one chunk's fields at a
time per thread, whatever the tensor's size, and the chunks are coded on the codec's threads
(``threads.pool``: numpy's splitting and merging release the GIL; the entropy coders may not).
A long plane whose measured entropy leaves nothing to gain is stored raw without running a coder,
and a long plane is coded with ANS or raw only: on a stream that long, Huffman's payload is larger
than ANS's by more than its smaller table saves (ANS codes within a fraction of a percent of the
entropy, Huffman loses up to a bit per symbol).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from netshrink.codec.checks import checked_int
from netshrink.codec.entropy import decode_symbols, encode_symbols, max_symbols, shannon_bits
from netshrink.codec.threads import pool
from netshrink.core.errors import NetshrinkFormatError

#: dtype name -> (exponent bits, mantissa bits, unsigned integer type of the whole value)
FLOAT_LAYOUTS = {
    "float16": (5, 10, np.uint16),
    "bfloat16": (8, 7, np.uint16),
    "float32": (8, 23, np.uint32),
    "float64": (11, 52, np.uint64),
}
#: values per chunk of a large tensor
CHUNK = 1 << 21
#: planes at least this long choose between ANS and raw only
LONG_PLANE = 1 << 16
_PLANE_KEYS = {"method", "params", "size"}
_MAX_CHUNK = 1 << 31


def _plane_widths(dtype_name: str) -> list[int]:
    """Bit width of each plane: the exponent, then 8-bit slices of sign-and-mantissa."""
    exponent_bits, mantissa_bits, _ = FLOAT_LAYOUTS[dtype_name]
    sign_mantissa_bits = mantissa_bits + 1
    return [exponent_bits] + [min(8, sign_mantissa_bits - k) for k in range(0, sign_mantissa_bits, 8)]


def _infer_dtype_name(array: np.ndarray, dtype_name: str | None) -> str:
    if dtype_name is None:
        kinds = {np.dtype(np.float16): "float16", np.dtype(np.float32): "float32",
                 np.dtype(np.float64): "float64", np.dtype(np.uint16): "bfloat16"}
        dtype_name = kinds.get(array.dtype.newbyteorder("="))
        if dtype_name is None:
            raise ValueError(f"cannot code dtype {array.dtype}; pass float16/32/64 or bfloat16 as uint16")
    if dtype_name not in FLOAT_LAYOUTS:
        raise ValueError(f"unknown float dtype {dtype_name!r}; choose one of {sorted(FLOAT_LAYOUTS)}")
    if array.dtype.itemsize != np.dtype(FLOAT_LAYOUTS[dtype_name][2]).itemsize:
        raise ValueError(f"array of dtype {array.dtype} does not hold {dtype_name} values")
    return dtype_name


def _encode_plane(field: np.ndarray, width: int) -> tuple[bytes, dict[str, Any]]:
    """One plane: the smallest of the coders, a long plane between ANS and raw only, and raw
    straight away when its entropy plus ANS's table would not be smaller than the raw bytes."""
    alphabet = 1 << width
    if field.size < LONG_PLANE:
        method, payload, params = encode_symbols(field, alphabet, "auto")
    else:
        raw_bytes = -(-field.size * width // 8)
        counts = np.bincount(field, minlength=alphabet)
        table = len(json.dumps({"counts": counts.tolist()}))
        method, payload, params = "none", None, {}
        if shannon_bits(field, alphabet) / 8 + table < raw_bytes:
            method, payload, params = encode_symbols(field, alphabet, "ans")
            if len(payload) + table >= raw_bytes:
                method, payload, params = "none", None, {}
        if payload is None:
            method, payload, params = encode_symbols(field, alphabet, "none")
    return payload, {"method": method, "params": params, "size": len(payload)}


def _encode_chunk(words: np.ndarray, dtype_name: str) -> tuple[list[bytes], list[dict[str, Any]]]:
    exponent_bits, mantissa_bits, uint_type = FLOAT_LAYOUTS[dtype_name]
    word = np.dtype(uint_type).type
    exponent = ((words >> word(mantissa_bits)) & word((1 << exponent_bits) - 1)).astype(np.uint16)
    sign = words >> word(exponent_bits + mantissa_bits)
    sign_mantissa = (words & word((1 << mantissa_bits) - 1)) | (sign << word(mantissa_bits))
    del sign
    payloads, planes = [], []
    for index, width in enumerate(_plane_widths(dtype_name)):
        field = exponent if index == 0 else ((sign_mantissa >> word(8 * (index - 1))) & word(0xFF)).astype(np.uint16)
        payload, plane = _encode_plane(field, width)
        payloads.append(payload)
        planes.append(plane)
        del field
    return payloads, planes


def encode_float_bytes(array: np.ndarray, dtype_name: str | None = None) -> tuple[bytes, dict[str, Any]]:
    """Losslessly code a float array; returns ``(payload, params)``.

    ``dtype_name`` is inferred from the array (float16, float32, float64; a uint16 array is taken
    as bfloat16 bits) unless given. The payload is the plane payloads back to back, chunk after
    chunk; params is ``{"dtype": name, "planes": [{"method", "params", "size"}, ...]}`` for at most
    ``CHUNK`` values, else ``{"dtype": name, "chunk": CHUNK, "chunks": [[plane, ...], ...]}``.
    """
    array = np.asarray(array)
    dtype_name = _infer_dtype_name(array, dtype_name)
    uint_type = np.dtype(FLOAT_LAYOUTS[dtype_name][2]).newbyteorder(array.dtype.byteorder)
    words = np.ascontiguousarray(array).reshape(-1).view(uint_type).astype(FLOAT_LAYOUTS[dtype_name][2], copy=False)
    starts = range(0, max(words.size, 1), CHUNK)
    coded = list(pool().map(lambda start: _encode_chunk(words[start:start + CHUNK], dtype_name), starts))
    payload = b"".join(b"".join(payloads) for payloads, _ in coded)
    if len(coded) == 1:
        return payload, {"dtype": dtype_name, "planes": coded[0][1]}
    return payload, {"dtype": dtype_name, "chunk": CHUNK, "chunks": [planes for _, planes in coded]}


def _checked_chunks(params: Any, count: int, dtype_name: str, payload_bytes: int) -> tuple[int, list[list[dict]]]:
    """``(values per chunk, planes of each chunk)`` from untrusted params, every field checked."""
    if not isinstance(params, dict) or params.get("dtype") != dtype_name:
        raise NetshrinkFormatError(f"float_bytes params must be an object with dtype {dtype_name!r}")
    widths = _plane_widths(dtype_name)
    if set(params) == {"dtype", "planes"}:
        chunk, chunks = max(count, 1), [params["planes"]]
    elif set(params) == {"dtype", "chunk", "chunks"}:
        chunk = checked_int(params["chunk"], 1, _MAX_CHUNK, "float_bytes chunk")
        chunks = params["chunks"]
        if not isinstance(chunks, list) or len(chunks) != -(-count // chunk):
            raise NetshrinkFormatError(f"float_bytes params['chunks'] must list {-(-count // chunk)} chunks")
    else:
        raise NetshrinkFormatError("float_bytes params hold dtype and planes, or dtype, chunk and chunks")
    total = 0
    for planes in chunks:
        if not isinstance(planes, list) or len(planes) != len(widths):
            raise NetshrinkFormatError(f"float_bytes params['planes'] must be a list of {len(widths)} planes")
        for plane in planes:
            if not isinstance(plane, dict) or set(plane) != _PLANE_KEYS:
                raise NetshrinkFormatError(f"each float_bytes plane must have exactly the keys {sorted(_PLANE_KEYS)}")
            total += checked_int(plane["size"], 0, payload_bytes, "float_bytes plane size")
    if total != payload_bytes:
        raise NetshrinkFormatError(f"float_bytes planes declare {total} bytes but the payload has {payload_bytes}")
    for index, planes in enumerate(chunks):  # before allocating anything
        symbols = min(chunk, count - index * chunk)
        for plane, width in zip(planes, widths, strict=True):
            limit = max_symbols(plane["method"], plane["params"], plane["size"], 1 << width)
            if limit is not None and symbols > limit:
                raise NetshrinkFormatError(f"a float_bytes plane of {plane['size']} bytes cannot hold {symbols} "
                                           "symbols")
    return chunk, chunks


def _decode_chunk(payload: Any, planes: list[dict], words: np.ndarray, dtype_name: str) -> None:
    """OR each plane into ``words`` (zeros) as soon as it is decoded: one plane at a time."""
    exponent_bits, mantissa_bits, uint_type = FLOAT_LAYOUTS[dtype_name]
    word = np.dtype(uint_type).type
    offset = 0
    for index, (plane, width) in enumerate(zip(planes, _plane_widths(dtype_name), strict=True)):
        chunk = payload[offset : offset + plane["size"]]
        offset += plane["size"]
        field = decode_symbols(plane["method"], chunk, plane["params"], words.size, 1 << width).astype(uint_type)
        if index == 0:  # the exponent
            words |= np.left_shift(field, word(mantissa_bits), out=field)
            continue
        low = 8 * (index - 1)  # this plane holds bits low .. low + width - 1 of sign-and-mantissa
        sign_at = mantissa_bits - low
        if sign_at < width:  # the plane holding the sign: it moves above the exponent
            sign = field >> word(sign_at)
            words |= np.left_shift(sign, word(exponent_bits + mantissa_bits), out=sign)
            del sign
            field &= word((1 << sign_at) - 1)
        words |= np.left_shift(field, word(low), out=field)
        del field


def decode_float_bytes(payload: bytes, params: dict, count: int, dtype_name: str) -> np.ndarray:
    """Inverse of :func:`encode_float_bytes`: ``count`` values, bit-identical.

    Returns float16/float32/float64 arrays, and uint16 (the raw bits) for bfloat16. Every field of
    the untrusted ``params`` is checked; anything wrong raises ``NetshrinkFormatError``. Chunks
    are decoded on the codec's threads, each into its own slice of the output.
    """
    if dtype_name not in FLOAT_LAYOUTS:
        raise NetshrinkFormatError(f"unknown float dtype {dtype_name!r}; expected one of {sorted(FLOAT_LAYOUTS)}")
    chunk, chunks = _checked_chunks(params, count, dtype_name, len(payload))
    words = np.zeros(count, dtype=FLOAT_LAYOUTS[dtype_name][2])
    offsets = np.cumsum([0] + [sum(plane["size"] for plane in planes) for planes in chunks])
    jobs = [(payload[offsets[k]:offsets[k + 1]], planes, words[k * chunk:(k + 1) * chunk])
            for k, planes in enumerate(chunks)]
    for _ in pool().map(lambda job: _decode_chunk(*job, dtype_name), jobs):
        pass
    return words if dtype_name == "bfloat16" else words.view(np.dtype(dtype_name))
