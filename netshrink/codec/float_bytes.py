"""Lossless coding of dense float tensors by field planes (the ZipNN and DFloat11 observation).

The exponent of trained weights takes few distinct values: ZipNN (Hershcovitch et al. 2024,
section 3, "byte grouping") and DFloat11 (Zhang et al. 2025, section 2) find about 2.6 bits of
entropy in the 8-bit exponent of bf16/fp32 weights, while sign and mantissa are near uniform.
So each value is split into fields: the exponent (one plane, alphabet ``2**exponent_bits``) and
the sign with the mantissa (planes of 8 bits, least significant first). Each plane goes through
``encode_symbols(..., "auto")``, which keeps it packed raw when no entropy coder beats that.
The round trip is bit-identical, NaN payloads and signed zeros included.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from netshrink.codec.checks import checked_int
from netshrink.codec.entropy import decode_symbols, encode_symbols, max_symbols
from netshrink.core.errors import NetshrinkFormatError

#: dtype name -> (exponent bits, mantissa bits, unsigned integer type of the whole value)
FLOAT_LAYOUTS = {
    "float16": (5, 10, np.uint16),
    "bfloat16": (8, 7, np.uint16),
    "float32": (8, 23, np.uint32),
    "float64": (11, 52, np.uint64),
}
_PLANE_KEYS = {"method", "params", "size"}


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


def encode_float_bytes(array: np.ndarray, dtype_name: str | None = None) -> tuple[bytes, dict[str, Any]]:
    """Losslessly code a float array; returns ``(payload, params)``.

    ``dtype_name`` is inferred from the array (float16, float32, float64; a uint16 array is taken
    as bfloat16 bits) unless given. The payload is the plane payloads back to back; params is
    ``{"dtype": name, "planes": [{"method", "params", "size"}, ...]}``.
    """
    array = np.asarray(array)
    dtype_name = _infer_dtype_name(array, dtype_name)
    exponent_bits, mantissa_bits, uint_type = FLOAT_LAYOUTS[dtype_name]
    words = np.ascontiguousarray(array).reshape(-1).view(np.dtype(uint_type).newbyteorder(array.dtype.byteorder))
    words = words.astype(np.uint64)
    exponent = (words >> np.uint64(mantissa_bits)) & np.uint64((1 << exponent_bits) - 1)
    sign = words >> np.uint64(exponent_bits + mantissa_bits)
    sign_mantissa = (words & np.uint64((1 << mantissa_bits) - 1)) | (sign << np.uint64(mantissa_bits))
    fields = [exponent] + [(sign_mantissa >> np.uint64(shift)) & np.uint64(0xFF)
                           for shift in range(0, mantissa_bits + 1, 8)]
    payloads, planes = [], []
    for field, width in zip(fields, _plane_widths(dtype_name), strict=True):
        method, payload, params = encode_symbols(field.astype(np.uint16), 1 << width, "auto")
        payloads.append(payload)
        planes.append({"method": method, "params": params, "size": len(payload)})
    return b"".join(payloads), {"dtype": dtype_name, "planes": planes}


def decode_float_bytes(payload: bytes, params: dict, count: int, dtype_name: str) -> np.ndarray:
    """Inverse of :func:`encode_float_bytes`: ``count`` values, bit-identical.

    Returns float16/float32/float64 arrays, and uint16 (the raw bits) for bfloat16. Every field of
    the untrusted ``params`` is checked; anything wrong raises ``NetshrinkFormatError``.
    """
    if dtype_name not in FLOAT_LAYOUTS:
        raise NetshrinkFormatError(f"unknown float dtype {dtype_name!r}; expected one of {sorted(FLOAT_LAYOUTS)}")
    if not isinstance(params, dict) or params.get("dtype") != dtype_name:
        raise NetshrinkFormatError(f"float_bytes params must be an object with dtype {dtype_name!r}")
    widths = _plane_widths(dtype_name)
    planes = params.get("planes")
    if not isinstance(planes, list) or len(planes) != len(widths):
        raise NetshrinkFormatError(f"float_bytes params['planes'] must be a list of {len(widths)} planes")
    for plane in planes:
        if not isinstance(plane, dict) or set(plane) != _PLANE_KEYS:
            raise NetshrinkFormatError(f"each float_bytes plane must have exactly the keys {sorted(_PLANE_KEYS)}")
        checked_int(plane["size"], 0, len(payload), "float_bytes plane size")
    if sum(plane["size"] for plane in planes) != len(payload):
        raise NetshrinkFormatError(
            f"float_bytes planes declare {sum(p['size'] for p in planes)} bytes but the payload has {len(payload)}"
        )
    exponent_bits, mantissa_bits, uint_type = FLOAT_LAYOUTS[dtype_name]
    # each plane is ORed into the words as soon as it is decoded, so decoding holds the words and
    # one plane at a time (the decoded-bytes bound of the float_bytes encoding counts just that)
    for plane, width in zip(planes, widths, strict=True):  # before allocating anything
        limit = max_symbols(plane["method"], plane["params"], plane["size"], 1 << width)
        if limit is not None and count > limit:
            raise NetshrinkFormatError(f"a float_bytes plane of {plane['size']} bytes cannot hold {count} symbols")
    word = np.dtype(uint_type).type
    words = np.zeros(count, dtype=uint_type)
    offset = 0
    for index, (plane, width) in enumerate(zip(planes, widths, strict=True)):
        chunk = payload[offset : offset + plane["size"]]
        offset += plane["size"]
        field = decode_symbols(plane["method"], chunk, plane["params"], count, 1 << width).astype(uint_type)
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
    return words if dtype_name == "bfloat16" else words.view(np.dtype(dtype_name))
