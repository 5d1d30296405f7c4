"""1-D k-means for weight sharing: sorting plus prefix sums, no generic n-D k-means.

On sorted values every cluster of an optimal (or Lloyd-stable) 1-D clustering is a contiguous run,
so a cluster's sum, count and squared error come from prefix sums in O(1). One Lloyd step is then a
``searchsorted`` of the k-1 midpoints between centroids plus O(k) arithmetic, after one O(n log n)
sort. The initialisations are Deep Compression's (Han et al. 2016, section 3.2): ``linear``
(equally spaced between min and max), ``density`` (equally spaced on the CDF) and ``random``
(Forgy: k distinct weights drawn at random); ``optimal`` is the exact clustering by dynamic
programming (Ckmeans.1d.dp, Wang & Song 2011, ``netshrink.quant.ckmeans``). Hand-written because
scikit-learn's KMeans is a generic n-D Lloyd without the 1-D shortcuts (the benchmark compares them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from netshrink.core.errors import ConfigError

INITS = ("linear", "density", "random", "optimal")
MAX_LLOYD_STEPS = 10_000


@dataclass(frozen=True)
class SortedValues:
    """Distinct sorted values with their multiplicities and weighted prefix sums (float64)."""

    values: np.ndarray  # (m,) distinct, ascending
    counts: np.ndarray  # (m,) multiplicity of each value
    count_sums: np.ndarray  # (m+1,) prefix sums of counts
    sums: np.ndarray  # (m+1,) prefix sums of count * value
    square_sums: np.ndarray  # (m+1,) prefix sums of count * value**2

    @staticmethod
    def of(data: np.ndarray) -> SortedValues:
        values, counts = np.unique(np.asarray(data).ravel(), return_counts=True)  # sorts in the input's dtype
        values, counts = values.astype(np.float64), counts.astype(np.float64)

        def prefix(a: np.ndarray) -> np.ndarray:
            return np.concatenate([[0.0], np.cumsum(a)])

        return SortedValues(values, counts, prefix(counts), prefix(counts * values), prefix(counts * values**2))

    def segment_stats(self, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(count, sum, squared error about the mean) of the runs ``values[starts:ends]``."""
        count = self.count_sums[ends] - self.count_sums[starts]
        total = self.sums[ends] - self.sums[starts]
        squares = self.square_sums[ends] - self.square_sums[starts]
        error = squares - np.divide(total**2, count, out=np.zeros_like(total), where=count > 0)
        return count, total, np.maximum(error, 0.0)


@dataclass(frozen=True)
class Clustering:
    """Sorted centroids, the cluster of every input value, and the within-cluster squared error."""

    centroids: np.ndarray  # (k,) ascending
    labels: np.ndarray  # (n,) int64 index into centroids
    inertia: float
    steps: int  # Lloyd steps run (0 for "optimal")


def initial_centroids(sv: SortedValues, k: int, init: str, seed: int) -> np.ndarray:
    """Deep Compression's three initialisations (section 3.2, Figure 4)."""
    if init == "linear":
        return np.linspace(sv.values[0], sv.values[-1], k)
    if init == "density":
        levels = (np.arange(k) + 0.5) / k * sv.count_sums[-1]  # equally spaced on the CDF's y-axis
        return sv.values[np.searchsorted(sv.count_sums[1:], levels, side="right").clip(0, sv.values.size - 1)]
    if init == "random":
        rng = np.random.default_rng(seed)
        return np.sort(rng.choice(sv.values, size=k, replace=False))
    raise ConfigError(f"unknown init {init!r}; choose one of {list(INITS)}")


def cluster_bounds(sv: SortedValues, centroids: np.ndarray) -> np.ndarray:
    """(k+1,) run boundaries: values nearer ``centroids[c]`` than any other lie in
    ``values[bounds[c]:bounds[c+1]]`` (centroids ascending)."""
    midpoints = (centroids[:-1] + centroids[1:]) / 2
    inner = np.searchsorted(sv.values, midpoints, side="right")
    return np.concatenate([[0], inner, [sv.values.size]])


def lloyd(sv: SortedValues, centroids: np.ndarray, max_steps: int = MAX_LLOYD_STEPS) -> tuple[np.ndarray, int]:
    """Lloyd's algorithm in 1-D until the assignment stops changing; an empty cluster keeps its
    centroid. Returns (centroids ascending, steps)."""
    bounds = cluster_bounds(sv, centroids)
    for step in range(1, max_steps + 1):
        count, total, _ = sv.segment_stats(bounds[:-1], bounds[1:])
        centroids = np.sort(np.where(count > 0, total / np.maximum(count, 1.0), centroids))
        new_bounds = cluster_bounds(sv, centroids)
        if np.array_equal(new_bounds, bounds):
            return centroids, step
        bounds = new_bounds
    return centroids, max_steps


def kmeans_1d(data: np.ndarray, k: int, init: str = "density", seed: int = 0) -> Clustering:
    """Cluster the 1-D ``data`` into ``k`` groups (k-means, squared error).

    Args:
        data: any array of finite values (flattened).
        k: number of clusters; at most the number of distinct values.
        init: ``"linear"``, ``"density"``, ``"random"`` (then Lloyd's algorithm) or ``"optimal"``
            (exact, by dynamic programming).
        seed: for ``"random"``.

    Example:
        >>> kmeans_1d(weights, 16, init="linear").centroids
    """
    from netshrink.quant.ckmeans import optimal_bounds

    data = np.asarray(data).ravel()
    if not np.issubdtype(data.dtype, np.floating):
        data = data.astype(np.float64)
    if init not in INITS:
        raise ConfigError(f"unknown init {init!r}; choose one of {list(INITS)}")
    if data.size and not np.isfinite(data).all():
        raise ConfigError("cannot cluster NaN or infinite values; fix or drop the non-finite weights first")
    sv = SortedValues.of(data)
    if not 1 <= k <= sv.values.size:
        raise ConfigError(f"cannot make {k} clusters from {sv.values.size} distinct values; "
                          "use fewer bits or cluster a larger layer")
    if init == "optimal":
        bounds, steps = optimal_bounds(sv, k), 0
        count, total, _ = sv.segment_stats(bounds[:-1], bounds[1:])
        centroids = total / count
    else:
        centroids, steps = lloyd(sv, initial_centroids(sv, k, init, seed))
        bounds = cluster_bounds(sv, centroids)
    _, _, errors = sv.segment_stats(bounds[:-1], bounds[1:])
    # a value's label is the number of runs starting at or below it (a search among k values, not n)
    inner = bounds[1:-1]
    starts = np.where(inner < sv.values.size, sv.values[np.minimum(inner, sv.values.size - 1)], np.inf)
    labels = np.searchsorted(starts, data, side="right")
    return Clustering(centroids, labels.astype(np.int64), float(errors.sum()), steps)
