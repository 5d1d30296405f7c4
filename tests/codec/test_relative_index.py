import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netshrink.codec.relative_index import (
    best_index_bits,
    relative_index_decode,
    relative_index_encode,
    relative_index_entries,
)
from netshrink.core.errors import NetshrinkFormatError


def test_filler_bridges_a_gap_too_large_for_the_index():
    # Han et al. 2016 figure 2 style: 3-bit index (max gap 7), nonzeros at 0 and 20.
    gaps, entries = relative_index_encode(np.array([0, 20]), 3)
    assert gaps.tolist() == [0, 7, 7, 3]
    assert entries.tolist() == [0, 8, 16, 20]


def test_gap_of_exactly_max_needs_no_filler():
    gaps, entries = relative_index_encode(np.array([7]), 3)
    assert gaps.tolist() == [7] and entries.tolist() == [7]
    gaps, entries = relative_index_encode(np.array([8]), 3)
    assert gaps.tolist() == [7, 0] and entries.tolist() == [7, 8]


@settings(max_examples=60, deadline=None)
@given(
    numel=st.integers(1, 2000),
    density=st.floats(0.0, 1.0),
    index_bits=st.integers(1, 16),
    seed=st.integers(0, 2**32 - 1),
)
def test_round_trip_and_values_stream(numel, density, index_bits, seed):
    rng = np.random.default_rng(seed)
    flat = np.where(rng.random(numel) < density, rng.integers(1, 9, numel), 0)
    positions = np.flatnonzero(flat)
    gaps, entries = relative_index_encode(positions, index_bits)
    assert gaps.size == entries.size
    assert gaps.size == 0 or int(gaps.max()) < 2**index_bits
    assert np.array_equal(relative_index_decode(gaps, numel), entries)
    rebuilt = np.zeros(numel, dtype=flat.dtype)
    rebuilt[entries] = flat[entries]  # fillers carry value 0
    assert np.array_equal(rebuilt, flat)
    assert np.count_nonzero(flat[entries]) == positions.size


def test_decode_rejects_positions_past_the_tensor():
    with pytest.raises(NetshrinkFormatError):
        relative_index_decode(np.array([3, 3]), 7)


def test_best_index_bits_is_the_argmin():
    rng = np.random.default_rng(1)
    positions = np.flatnonzero(rng.random(50_000) < 0.1)
    for value_bits in (2, 5, 8.5):
        entries = relative_index_entries(positions, range(1, 17))
        totals = entries * (np.arange(1, 17) + value_bits)
        assert best_index_bits(positions, value_bits) == 1 + int(np.argmin(totals))
        b = best_index_bits(positions, value_bits)
        assert entries[b - 1] == relative_index_encode(positions, b)[0].size


def test_encode_is_vectorised_on_a_million_positions():
    """No Python step per position: a million positions take a few hundred calls, not millions."""
    from tests.codec.work import operations

    positions = np.sort(np.random.default_rng(2).choice(20_000_000, 1_000_000, replace=False))
    assert operations(lambda: relative_index_encode(positions, best_index_bits(positions, 5))) < 2_000
