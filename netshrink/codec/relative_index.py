"""Sparse storage by relative index (Han et al. 2016, "Deep Compression", section 2, figure 2).

A pruned tensor is stored as its nonzero values plus, for each, the *gap*: the number of positions
skipped since the previous entry, in ``index_bits`` bits. A gap that does not fit is bridged with
filler entries: an entry at a zero position whose stored value is 0. Everything is vectorised:
fillers are expanded with ``np.repeat``, never one at a time.
"""

from __future__ import annotations

import numpy as np

from netshrink.core.errors import NetshrinkFormatError


def _raw_gaps(positions: np.ndarray) -> np.ndarray:
    """Positions skipped before each nonzero (the first is measured from position -1)."""
    positions = np.asarray(positions).reshape(-1)
    if positions.size and not np.issubdtype(positions.dtype, np.integer):
        raise ValueError(f"positions must be integers, got dtype {positions.dtype}")
    positions = positions.astype(np.int64, copy=False)
    gaps = np.diff(positions, prepend=-1) - 1
    if gaps.size and gaps.min() < 0:
        raise ValueError("positions must be non-negative, sorted and distinct")
    return gaps


def relative_index_encode(positions: np.ndarray, index_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Relative-index gaps (each ``< 2**index_bits``) and the flat position of every entry.

    Returns ``(gaps, entry_positions)`` of equal length, fillers included: a raw gap ``d`` larger
    than ``max_gap = 2**index_bits - 1`` becomes ``d // (max_gap + 1)`` fillers of gap ``max_gap``
    followed by the real entry with gap ``d % (max_gap + 1)``. The values stream is
    ``flat[entry_positions]`` (0 at the fillers). ``gaps`` is uint16, ``entry_positions`` int64.
    """
    if not 1 <= index_bits <= 16:
        raise ValueError(f"index_bits must be 1..16, got {index_bits}")
    raw = _raw_gaps(positions)
    stride = 1 << index_bits  # a filler advances by max_gap skipped positions plus itself
    fillers = raw // stride
    entries_per_nonzero = fillers + 1
    gaps = np.full(int(entries_per_nonzero.sum()), stride - 1, dtype=np.int64)
    last_entry = np.cumsum(entries_per_nonzero) - 1  # where each real nonzero lands
    gaps[last_entry] = raw % stride
    entry_positions = np.cumsum(gaps + 1) - 1
    return gaps.astype(np.uint16), entry_positions


def relative_index_decode(gaps: np.ndarray, numel: int) -> np.ndarray:
    """Flat positions of all entries (fillers included) from their gaps; checked against ``numel``."""
    gaps = np.asarray(gaps).reshape(-1)
    if gaps.size and (not np.issubdtype(gaps.dtype, np.integer) or int(gaps.min()) < 0):
        raise NetshrinkFormatError("relative index gaps must be non-negative integers")
    entry_positions = np.cumsum(gaps.astype(np.int64) + 1) - 1
    if entry_positions.size and int(entry_positions[-1]) >= numel:
        raise NetshrinkFormatError(
            f"relative index reaches position {int(entry_positions[-1])} but the tensor has {numel} elements"
        )
    return entry_positions


def relative_index_entries(positions: np.ndarray, candidates: range | list[int]) -> np.ndarray:
    """Number of entries (nonzeros plus fillers) for each candidate index width."""
    raw = _raw_gaps(positions)
    return np.array([raw.size + int((raw >> b).sum()) for b in candidates], dtype=np.int64)


def best_index_bits(positions: np.ndarray, value_bits: float, candidates=range(1, 17)) -> int:
    """The index width ``b`` minimising ``entries(b) * (b + value_bits)`` (smallest ``b`` on ties).

    Deep Compression uses 8 bits for conv layers and 5 for fully connected ones (section 2); this
    picks the width per tensor from the actual gap distribution instead.
    """
    candidates = list(candidates)
    if not candidates:
        raise ValueError("candidates must not be empty")
    entries = relative_index_entries(positions, candidates)
    total_bits = entries * (np.asarray(candidates, dtype=np.float64) + value_bits)
    return int(candidates[int(np.argmin(total_bits))])
