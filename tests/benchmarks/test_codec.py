"""The codec benchmark's optimal-Huffman peer counts its table as a canonical Huffman table does."""

import numpy as np
import pytest

from benchmarks.codec import canonical_table_bits, optimal_huffman_bytes
from netshrink.codec.huffman import optimal_huffman_bits


def test_a_canonical_table_is_one_length_per_symbol_in_the_width_of_the_longest():
    assert canonical_table_bits(np.array([1, 2, 3, 3, 0])) == 3 + 5 * 2
    assert canonical_table_bits(np.array([1, 2, 3, 4, 5, 6, 7, 8, 8] + [0] * 23)) == 3 + 32 * 4
    assert canonical_table_bits(np.array([1] + list(range(2, 17)) + [16])) == 3 + 17 * 5


def test_the_peer_is_its_payload_and_table_in_whole_bytes():
    counts = np.array([50, 20, 20, 5, 5, 0, 0, 0])  # lengths 1, 2, 3, 4, 4: a 3-bit width
    payload = optimal_huffman_bits(counts)
    assert payload == 50 + 2 * 20 + 3 * 20 + 4 * 10
    assert optimal_huffman_bytes(counts) == -(-(payload + 3 + 8 * 3) // 8)


def test_a_stream_needing_codes_over_16_bits_is_refused():
    counts = np.array([2**k for k in range(20)])  # an optimal code 19 bits deep
    with pytest.raises(ValueError, match="longer than 16 bits"):
        optimal_huffman_bytes(counts)
