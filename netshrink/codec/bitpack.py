"""Bit packing: fixed-width and variable-width unsigned codes in one little-endian bit stream.

Bit order is little-endian throughout: value ``i`` of a fixed-width stream occupies stream bits
``i*bits .. i*bits+bits-1``, least significant bit first, and stream bit ``k`` is bit ``k % 8``
of byte ``k // 8``. This is the storage of k-bit weights and cluster indices (Han et al. 2016,
"Deep Compression", section 3: 5-bit indices into a shared codebook) and of Huffman code words.
All work is vectorised with numpy (``np.unpackbits`` / ``np.packbits`` over a bit matrix).
"""

from __future__ import annotations

import numpy as np

from netshrink.codec.checks import checked_int
from netshrink.core.errors import NetshrinkFormatError

MAX_BITS = 16
_CHUNK = 1 << 20  # values per chunk of the bit matrix: bounds temporary memory at 16 MiB
#: most bytes ``unpack_bits`` allocates besides its output, whatever the count: one chunk's bit
#: stream, bit matrix and packed words (measured at about 44 bytes per value of a chunk)
UNPACK_WORK_BYTES = 48 * _CHUNK
#: widths whose values are whole bytes: packed as they are, without the bit matrix
_WHOLE_BYTES = {8: np.dtype("<u1"), 16: np.dtype("<u2")}


def symbol_dtype(alphabet_size: int) -> np.dtype:
    """The smallest unsigned dtype holding values ``0 .. alphabet_size - 1`` (uint8 or uint16)."""
    return np.dtype(np.uint8) if alphabet_size <= 256 else np.dtype(np.uint16)


def packed_length(count: int, bits: int) -> int:
    """Bytes of ``count`` values of ``bits`` bits each: ``ceil(count * bits / 8)``."""
    return (count * bits + 7) // 8


def _check_bits(bits: int) -> None:
    checked_int(bits, 1, MAX_BITS, "bit width")


def _as_unsigned(values: np.ndarray, limit: int, what: str) -> np.ndarray:
    """Flatten ``values`` to uint16 after checking every value lies in ``0 .. limit - 1``."""
    values = np.asarray(values).reshape(-1)
    if values.size and not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"{what} must be integers, got dtype {values.dtype}")
    if values.size and (int(values.min()) < 0 or int(values.max()) >= limit):
        raise ValueError(f"{what} must lie in 0..{limit - 1}")
    return values.astype(np.uint16, copy=False)


def pack_variable_bits(codes: np.ndarray, widths: np.ndarray) -> bytes:
    """Concatenate ``codes[i]`` (its low ``widths[i]`` bits, LSB first) into one bit stream.

    Widths are 0..16. Serves both fixed-width packing and Huffman code words; the output has
    ``ceil(sum(widths) / 8)`` bytes, the last byte zero-padded.
    """
    codes = np.asarray(codes, dtype=np.uint16).reshape(-1)
    widths = np.asarray(widths, dtype=np.uint8).reshape(-1)
    if codes.shape != widths.shape:
        raise ValueError("codes and widths must have the same length")
    total_bits = int(widths.sum(dtype=np.int64))
    stream = np.empty(total_bits, dtype=np.uint8)
    bit_rank = np.arange(MAX_BITS, dtype=np.uint8)
    written = 0
    for start in range(0, codes.size, _CHUNK):
        chunk = codes[start : start + _CHUNK].astype("<u2").view(np.uint8).reshape(-1, 2)
        bit_matrix = np.unpackbits(chunk, axis=1, bitorder="little")  # (n, 16), LSB first
        keep = bit_rank[None, :] < widths[start : start + _CHUNK, None]
        chunk_bits = bit_matrix[keep]  # row-major: the codes' bits in stream order
        stream[written : written + chunk_bits.size] = chunk_bits
        written += chunk_bits.size
    return np.packbits(stream, bitorder="little").tobytes()


def pack_bits(values: np.ndarray, bits: int) -> bytes:
    """Pack unsigned integers, each ``< 2**bits`` (bits 1..16), into ``ceil(n*bits/8)`` bytes."""
    _check_bits(bits)
    values = _as_unsigned(values, 1 << bits, "values")
    if bits in _WHOLE_BYTES:  # whole bytes: the values' own little-endian bytes
        return values.astype(_WHOLE_BYTES[bits], copy=False).tobytes()
    return pack_variable_bits(values, np.full(values.size, bits, dtype=np.uint8))


def unpack_bits(data: bytes, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: ``count`` values of ``bits`` bits each.

    Returns uint8 when ``bits <= 8``, else uint16 (see :func:`symbol_dtype`). Raises
    ``NetshrinkFormatError`` when the bit width is out of range or ``len(data)`` is not exactly
    ``ceil(count * bits / 8)``.
    """
    _check_bits(bits)
    count = checked_int(count, 0, 2 ** 63, "value count")
    expected = packed_length(int(count), int(bits))
    if len(data) != expected:
        raise NetshrinkFormatError(
            f"packed data has {len(data)} bytes but {count} values of {bits} bits need {expected}"
        )
    if bits in _WHOLE_BYTES:
        return np.frombuffer(data, dtype=_WHOLE_BYTES[bits]).astype(symbol_dtype(1 << bits))
    out = np.empty(count, dtype=symbol_dtype(1 << bits))
    raw = np.frombuffer(data, dtype=np.uint8)
    for start in range(0, count, _CHUNK):
        stop = min(count, start + _CHUNK)
        # A chunk of _CHUNK values starts on a byte boundary because _CHUNK is a multiple of 8.
        chunk_bytes = raw[start * bits // 8 : packed_length(stop, bits)]
        stream = np.unpackbits(chunk_bytes, bitorder="little")[: (stop - start) * bits]
        bit_matrix = np.zeros((stop - start, MAX_BITS), dtype=np.uint8)
        bit_matrix[:, :bits] = stream.reshape(-1, bits)
        words = np.packbits(bit_matrix, axis=1, bitorder="little").view("<u2").reshape(-1)
        out[start:stop] = words
    return out
