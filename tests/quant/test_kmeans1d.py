"""1-D k-means: exactness of the dynamic program, Lloyd fixed points, the three initialisations."""

import itertools

import numpy as np
import pytest

from netshrink.core.errors import ConfigError
from netshrink.quant.kmeans1d import INITS, SortedValues, initial_centroids, kmeans_1d


def brute_force_inertia(values: np.ndarray, k: int) -> float:
    """Least squared error over every split of the sorted values into k contiguous runs."""
    x = np.sort(values)
    best = np.inf
    for cuts in itertools.combinations(range(1, x.size), k - 1):
        bounds = [0, *cuts, x.size]
        best = min(best, sum(((x[a:b] - x[a:b].mean()) ** 2).sum() for a, b in zip(bounds, bounds[1:], strict=False)))
    return best


def test_optimal_matches_brute_force_on_small_sets():
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(150):
        n = int(rng.integers(2, 10))
        values = rng.normal(size=n).round(1)  # ties on purpose
        k = int(rng.integers(1, min(len(np.unique(values)), 4) + 1))
        assert kmeans_1d(values, k, init="optimal").inertia == pytest.approx(brute_force_inertia(values, k), abs=1e-9)
        checked += 1
    assert checked == 150


@pytest.mark.parametrize("init", ["linear", "density", "random"])
def test_optimal_is_no_worse_than_lloyd(init):
    values = np.random.default_rng(1).standard_t(3, size=5000)
    assert kmeans_1d(values, 16, "optimal").inertia <= kmeans_1d(values, 16, init).inertia + 1e-9


@pytest.mark.parametrize("init", INITS)
def test_result_is_a_lloyd_fixed_point(init):
    values = np.random.default_rng(2).normal(size=3000)
    result = kmeans_1d(values, 8, init)
    # every value is labelled with its nearest centroid ...
    nearest = np.abs(values[:, None] - result.centroids[None, :]).argmin(axis=1)
    assert np.array_equal(result.labels, nearest)
    # ... and every centroid is the mean of its members
    for c, centroid in enumerate(result.centroids):
        assert centroid == pytest.approx(values[result.labels == c].mean())
    assert result.inertia == pytest.approx(((values - result.centroids[result.labels]) ** 2).sum())
    assert np.all(np.diff(result.centroids) > 0)


def test_initialisations_follow_deep_compression():
    values = np.random.default_rng(3).normal(size=10_000) ** 3  # long tails
    sv = SortedValues.of(values)
    linear = initial_centroids(sv, 5, "linear", 0)
    assert np.allclose(linear, np.linspace(values.min(), values.max(), 5))
    density = initial_centroids(sv, 4, "density", 0)
    # equally spaced on the CDF: about a quarter of the values below the first gap's middle quantile
    assert np.allclose((values[:, None] <= density[None, :]).mean(axis=0), [0.125, 0.375, 0.625, 0.875], atol=1e-3)
    random = initial_centroids(sv, 6, "random", 7)
    assert set(random) <= set(values) and len(set(random)) == 6
    assert np.array_equal(random, initial_centroids(sv, 6, "random", 7))


def test_repeated_values_count_with_their_multiplicity():
    values = np.array([0.0] * 100 + [1.0] + [10.0])
    # two clusters: {0 x100, 1} and {10} beats {0 x100} and {1, 10}
    assert kmeans_1d(values, 2, "optimal").centroids[1] == 10.0
    assert kmeans_1d(np.tile(values, 3), 2, "optimal").inertia == pytest.approx(3 * kmeans_1d(values, 2, "optimal")
                                                                                  .inertia)


def test_bad_input_is_one_line():
    with pytest.raises(ConfigError, match="3 distinct values"):
        kmeans_1d(np.array([1.0, 1.0, 2.0, 3.0]), 4)
    with pytest.raises(ConfigError, match="NaN or infinite"):
        kmeans_1d(np.array([1.0, np.nan, 2.0]), 2)
    with pytest.raises(ConfigError, match="unknown init"):
        kmeans_1d(np.array([1.0, 2.0]), 2, init="kmeans++")
