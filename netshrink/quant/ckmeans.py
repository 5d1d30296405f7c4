"""Exact 1-D k-means by dynamic programming (Ckmeans.1d.dp; Wang & Song 2011, section 2).

On sorted values the optimal clusters are contiguous runs. With ``D[m][i]`` the least squared
error of splitting the first ``i+1`` values into ``m+1`` runs,

    D[m][i] = min over j of  D[m-1][j-1] + cost(j, i),   cost = squared error of values[j..i],

and the best split point ``J[m][i]`` never decreases in ``i`` (Wang & Song's section 2.2; the
Ckmeans.1d.dp package exploits it with divide and conquer). Each row is therefore filled by
divide and conquer over ``i``: the middle ``i`` of every open interval scans only the split points
its neighbours allow. All intervals of one recursion depth are solved together in numpy, so a row
costs O(n) work per depth and O(log n) depths: O(k n log n) in all, in about ``k log2 n`` vectorised
passes. Ties between split points go to the smallest, so the result is deterministic. Hand-written:
the reference implementation is an R/C++ package with no maintained Python binding.
"""

from __future__ import annotations

import numpy as np

from netshrink.quant.kmeans1d import SortedValues


def _run_error(sv: SortedValues, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Squared error about the mean of the non-empty runs ``values[starts:ends]``."""
    total = sv.sums[ends] - sv.sums[starts]
    total *= total
    total /= sv.count_sums[ends] - sv.count_sums[starts]
    error = sv.square_sums[ends] - sv.square_sums[starts]
    error -= total
    return error


def _row(sv: SortedValues, previous: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Row ``m`` (>= 1) of the table: (D[m], J[m]) for i in [m, n-1] (entries below m unused)."""
    n = sv.values.size
    best = np.full(n, np.inf)
    split = np.zeros(n, dtype=np.int64)
    # open intervals: i in [i_lo, i_hi], split point searched in [j_lo, j_hi]
    i_lo, i_hi = np.array([m]), np.array([n - 1])
    j_lo, j_hi = np.array([m]), np.array([n - 1])
    while i_lo.size:
        mid = (i_lo + i_hi) // 2
        lo, hi = j_lo, np.minimum(j_hi, mid)
        lengths = hi - lo + 1  # >= 1: a split point never exceeds its i
        starts = np.cumsum(lengths) - lengths
        interval = np.repeat(np.arange(mid.size), lengths)
        j = lo[interval] + (np.arange(lengths.sum()) - starts[interval])  # every candidate split
        i = mid[interval]
        value = _run_error(sv, j, i + 1)
        value += previous[j - 1]
        low = np.minimum.reduceat(value, starts)
        # first candidate reaching the minimum of its interval (smallest split point)
        position = np.where(value <= low[interval], np.arange(value.size), value.size)
        arg = j[np.minimum.reduceat(position, starts)]
        best[mid], split[mid] = low, arg
        left, right = mid > i_lo, mid < i_hi
        i_lo, i_hi, j_lo, j_hi = (
            np.concatenate([i_lo[left], mid[right] + 1]),
            np.concatenate([mid[left] - 1, i_hi[right]]),
            np.concatenate([j_lo[left], arg[right]]),
            np.concatenate([arg[left], j_hi[right]]),
        )
    return best, split


def optimal_bounds(sv: SortedValues, k: int) -> np.ndarray:
    """(k+1,) run boundaries of the optimal k-clustering of ``sv``'s values (k <= distinct values)."""
    n = sv.values.size
    # centre the values so the prefix sums lose no precision to a large mean
    shift = sv.sums[-1] / sv.count_sums[-1]
    values = sv.values - shift
    sums = np.concatenate([[0.0], np.cumsum(sv.counts * values)])
    squares = np.concatenate([[0.0], np.cumsum(sv.counts * values**2)])
    sv = SortedValues(values, sv.counts, sv.count_sums, sums, squares)
    first_row = _run_error(sv, np.zeros(n, dtype=np.int64), np.arange(1, n + 1))
    previous, splits = first_row, []
    for m in range(1, k):
        previous, split = _row(sv, previous, m)
        splits.append(split)
    bounds = [n]
    end = n - 1
    for split in reversed(splits):
        start = int(split[end])
        bounds.append(start)
        end = start - 1
    bounds.append(0)
    return np.array(bounds[::-1], dtype=np.int64)
