"""The checks every codec stage shares: one alphabet bound, one integer check for untrusted fields.

Encoders get ``ValueError`` (a caller's mistake); decoders get ``NetshrinkFormatError`` (a bad
file). Each stage calls these instead of keeping its own copy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from netshrink.core.errors import NetshrinkFormatError

#: symbols of an entropy-coded stream lie in ``0 .. alphabet_size - 1``, alphabet at most 2**16
MAX_ALPHABET = 1 << 16


def checked_int(value: Any, low: int, high: int, what: str) -> int:
    """``value`` from a file if it is an integer (not a bool) in ``low..high``, else a format error."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise NetshrinkFormatError(f"{what} must be an integer in {low}..{high}, got {str(value)[:40]!r}")
    return int(value)


def checked_stream_shape(count: Any, alphabet_size: Any) -> tuple[int, int]:
    """A decoder's declared symbol count and alphabet size, checked (format errors)."""
    return (checked_int(count, 0, 2 ** 63, "symbol count"),
            checked_int(alphabet_size, 1, MAX_ALPHABET, "alphabet size"))


def checked_symbols(symbols: Any, alphabet_size: int) -> np.ndarray:
    """An encoder's input as a flat integer array in ``0 .. alphabet_size - 1`` (ValueError)."""
    if not 1 <= alphabet_size <= MAX_ALPHABET:
        raise ValueError(f"alphabet_size must be 1..{MAX_ALPHABET}, got {alphabet_size}")
    symbols = np.asarray(symbols).reshape(-1)
    if symbols.size and (not np.issubdtype(symbols.dtype, np.integer) or int(symbols.min()) < 0
                         or int(symbols.max()) >= alphabet_size):
        raise ValueError(f"symbols must be integers in 0..{alphabet_size - 1}")
    return symbols


def checked_int_list(value: Any, length: int, low: int, high: int, what: str) -> np.ndarray:
    """A list of ``length`` integers in ``low..high`` from a file, as int64 (format errors)."""
    if not isinstance(value, list) or len(value) != length:
        raise NetshrinkFormatError(f"{what} must be a list of {length} integers")
    if not all(isinstance(x, int) and not isinstance(x, bool) and low <= x <= high for x in value):
        raise NetshrinkFormatError(f"{what} must be integers in {low}..{high}")
    return np.asarray(value, dtype=np.int64)
