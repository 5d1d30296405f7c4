import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netshrink.codec.huffman import (
    LENGTH_DIGITS,
    canonical_codes,
    huffman_code_lengths,
    huffman_decode,
    huffman_encode,
    optimal_huffman_bits,
)
from netshrink.core.errors import NetshrinkFormatError
from tests.codec.corrupt import bit_flips, decodes_or_refuses, param_edits, truncations

counts_lists = st.lists(st.integers(0, 10**6), min_size=1, max_size=300)


def kraft_sum(lengths: np.ndarray) -> float:
    used = lengths[lengths > 0].astype(np.float64)
    return float(np.sum(2.0 ** -used))


@settings(max_examples=80, deadline=None)
@given(counts=counts_lists, max_length=st.integers(9, 16))
def test_lengths_satisfy_kraft_and_the_limit(counts, max_length):
    counts = np.array(counts)
    lengths = huffman_code_lengths(counts, max_length)
    assert lengths.max() <= max_length
    assert np.array_equal(lengths > 0, counts > 0)
    assert kraft_sum(lengths) <= 1.0
    if np.count_nonzero(counts) > 1:
        assert kraft_sum(lengths) == 1.0  # package-merge codes are complete


@settings(max_examples=80, deadline=None)
@given(counts=counts_lists)
def test_length_equals_optimal_huffman_when_the_limit_is_not_binding(counts):
    counts = np.array(counts)
    used = np.count_nonzero(counts)
    # With at most 16 used symbols an unlimited Huffman tree is at most 15 deep.
    if used > 16:
        counts = counts.copy()
        counts[np.flatnonzero(counts)[16:]] = 0
    lengths = huffman_code_lengths(counts, 16)
    assert int(np.sum(counts * lengths)) == optimal_huffman_bits(counts)


def test_binding_limit_is_respected_on_fibonacci_counts():
    fib = [1, 1]
    while len(fib) < 30:
        fib.append(fib[-1] + fib[-2])
    lengths = huffman_code_lengths(np.array(fib), 10)
    assert lengths.max() == 10 and kraft_sum(lengths) == 1.0
    assert np.sum(np.array(fib) * lengths) >= optimal_huffman_bits(np.array(fib))


def test_single_symbol_gets_length_one():
    assert huffman_code_lengths(np.array([0, 5, 0])).tolist() == [0, 1, 0]


def test_canonical_codes_are_prefix_free():
    lengths = huffman_code_lengths(np.array([50, 20, 10, 10, 5, 3, 1, 1]))
    codes = canonical_codes(lengths)
    words = [format(int(c), f"0{int(n)}b")[::-1] for c, n in zip(codes, lengths, strict=True)]  # first bit first
    for i, a in enumerate(words):
        for j, b in enumerate(words):
            assert i == j or not b.startswith(a)


@settings(max_examples=60, deadline=None)
@given(
    alphabet_size=st.integers(1, 300),
    n=st.integers(0, 3000),
    skew=st.floats(0.05, 5.0),
    block_size=st.integers(1, 700),
    seed=st.integers(0, 2**32 - 1),
)
def test_round_trip(alphabet_size, n, skew, block_size, seed):
    rng = np.random.default_rng(seed)
    p = np.exp(-np.arange(alphabet_size) / skew)
    symbols = rng.choice(alphabet_size, n, p=p / p.sum())
    payload, params = huffman_encode(symbols, alphabet_size, block_size=block_size)
    decoded = huffman_decode(payload, params, n, alphabet_size)
    assert np.array_equal(decoded, symbols)
    assert decoded.dtype == (np.uint8 if alphabet_size <= 256 else np.uint16)


def test_round_trip_large_alphabet_and_limit():
    symbols = np.random.default_rng(3).zipf(1.3, 50_000) % 5000
    payload, params = huffman_encode(symbols, 5000, max_length=13, block_size=777)
    assert max(LENGTH_DIGITS.index(c) for c in params["lengths"]) <= 13
    assert np.array_equal(huffman_decode(payload, params, symbols.size, 5000), symbols)


@pytest.fixture(scope="module")
def encoded():
    rng = np.random.default_rng(4)
    p = np.exp(-np.arange(32) / 3.0)
    symbols = rng.choice(32, 5000, p=p / p.sum())
    payload, params = huffman_encode(symbols, 32, block_size=300)
    return symbols, payload, params


def test_malformed_payloads_raise_only_format_errors(encoded):
    symbols, payload, params = encoded
    for bad in truncations(payload) + [payload + b"\x00"]:
        with pytest.raises(NetshrinkFormatError):
            huffman_decode(bad, params, symbols.size, 32)
    for bad in bit_flips(payload, 200):
        decodes_or_refuses(huffman_decode, bad, params, symbols.size, 32)


def test_malformed_params_raise_only_format_errors(encoded):
    symbols, payload, params = encoded
    for bad in param_edits(params) + [None, [], {"code_lengths": [1] * 32}]:
        decodes_or_refuses(huffman_decode, payload, bad, symbols.size, 32)
    with pytest.raises(NetshrinkFormatError):
        huffman_decode(payload, dict(params, lengths="1" * 32), symbols.size, 32)  # Kraft
    for count in (-1, 0, symbols.size - 1, symbols.size + 1, 10**6):
        decodes_or_refuses(huffman_decode, payload, params, count, 32)
    for alphabet_size in (0, 31, 33, 2**17):
        with pytest.raises(NetshrinkFormatError):
            huffman_decode(payload, params, symbols.size, alphabet_size)


def test_the_table_is_one_character_a_symbol_and_lists_of_older_files_still_decode(encoded):
    """Format version 6 stores the code lengths as digits; files up to version 5 hold them as a
    JSON list of numbers (``code_lengths``), which still decodes to the same symbols."""
    symbols, payload, params = encoded
    assert len(params["lengths"]) == 32 and len(json.dumps(params)) < 32 + 40
    older = {**{k: v for k, v in params.items() if k != "lengths"},
             "code_lengths": [LENGTH_DIGITS.index(c) for c in params["lengths"]]}
    assert len(json.dumps(older)) > len(json.dumps(params)) + 40
    assert np.array_equal(huffman_decode(payload, older, symbols.size, 32), symbols)


@pytest.mark.parametrize("lengths", ["1" * 31, "1" * 33, "h" * 32, "z" * 32, "\u00e9" * 32, 5, None])
def test_bad_length_digits_are_refused(encoded, lengths):
    symbols, payload, params = encoded
    with pytest.raises(NetshrinkFormatError, match="lengths"):
        huffman_decode(payload, dict(params, lengths=lengths), symbols.size, 32)


def test_both_forms_of_the_lengths_at_once_are_refused(encoded):
    symbols, payload, params = encoded
    both = dict(params, code_lengths=[LENGTH_DIGITS.index(c) for c in params["lengths"]])
    with pytest.raises(NetshrinkFormatError, match="exactly one"):
        huffman_decode(payload, both, symbols.size, 32)


def test_incomplete_code_hitting_an_unused_pattern_is_refused():
    # lengths {1, 2}: the pattern "11" is no code word.
    params = {"code_lengths": [1, 2, 0], "max_length": 16, "block_size": 4, "offset_bits": 7}
    header = bytes([8])  # one block of 8 bits
    with pytest.raises(NetshrinkFormatError):
        huffman_decode(header + bytes([0xFF]), params, 4, 3)


def test_block_size_is_capped_on_both_sides():
    from netshrink.codec.huffman import MAX_BLOCK_SIZE, _offset_bits

    symbols = np.arange(8) % 4
    payload, params = huffman_encode(symbols, 4, block_size=MAX_BLOCK_SIZE)
    assert np.array_equal(huffman_decode(payload, params, symbols.size, 4), symbols)
    with pytest.raises(ValueError):
        huffman_encode(symbols, 4, block_size=MAX_BLOCK_SIZE + 1)
    for block_size in (MAX_BLOCK_SIZE + 1, 1 << 40):
        bad = dict(params, block_size=block_size, offset_bits=_offset_bits(block_size, 16))
        with pytest.raises(NetshrinkFormatError, match="block_size"):
            huffman_decode(payload, bad, symbols.size, 4)


def _engines(monkeypatch):
    """Count the calls of each decoder engine and the lockstep's Python-level steps."""
    import netshrink.codec.huffman as huffman

    calls = {"sequential": 0, "lockstep_steps": 0}
    sequential, lockstep = huffman._decode_sequential, huffman._decode_lockstep

    def counted_sequential(stream, ends, *rest):
        calls["sequential"] += len(ends)  # one C call per block
        return sequential(stream, ends, *rest)

    def counted_lockstep(stream, ends, block_size, *rest):
        calls["lockstep_steps"] += block_size
        return lockstep(stream, ends, block_size, *rest)

    monkeypatch.setattr(huffman, "_decode_sequential", counted_sequential)
    monkeypatch.setattr(huffman, "_decode_lockstep", counted_lockstep)
    return calls


@pytest.mark.parametrize("n, block_size", [(65_536, 65_536), (65_536, None), (200_000, 1), (200_000, 7),
                                           (200_000, 256), (200_000, 4096), (1_000_000, None), (3, 1)])
def test_python_steps_are_bounded_by_the_payload_for_any_layout(monkeypatch, n, block_size):
    """Whatever layout a file picks (one huge block took one Python step per symbol: 38 s for a
    68 KB file), the decoder takes at most LOCKSTEP_MIN_LANES + payload_bits / (LOCKSTEP_MIN_LANES - 1)
    Python-level steps: few blocks are decoded in C one call per block, many blocks in lockstep."""
    from netshrink.codec.huffman import LOCKSTEP_MIN_LANES, decode_steps

    symbols = np.random.default_rng(n).integers(0, 2, n)  # one bit per symbol: the most symbols per byte
    payload, params = huffman_encode(symbols, 2, block_size=block_size)
    calls = _engines(monkeypatch)
    assert np.array_equal(huffman_decode(payload, params, n, 2), symbols)
    steps = calls["sequential"] + calls["lockstep_steps"]
    block = min(params.get("block_size", n), n)
    assert steps == decode_steps(-(-n // block), block)
    assert steps <= LOCKSTEP_MIN_LANES + 8 * len(payload) / (LOCKSTEP_MIN_LANES - 1)


def test_layout_is_chosen_from_the_stream_length():
    """Short streams are one block (no table to speak of); long ones get lockstep blocks whose
    table stays under 0.5% of the payload."""
    from netshrink.codec.huffman import LOCKSTEP_MIN_LANES, TABLE_SHARE, _offset_bits

    rng = np.random.default_rng(6)
    p = np.exp(-np.arange(32) / 4.0)
    for n in (10, 10_000, 100_000, 2_000_000):
        symbols = rng.choice(32, n, p=p / p.sum())
        payload, params = huffman_encode(symbols, 32)
        n_blocks = -(-n // params.get("block_size", n))
        assert n_blocks == 1 or n_blocks >= LOCKSTEP_MIN_LANES
        assert ("block_size" in params) == (n_blocks > 1)  # one block: left out of the params
        if n_blocks > 1:
            assert n_blocks * _offset_bits(params["block_size"], 16) <= 8 * len(payload) / TABLE_SHARE
        assert np.array_equal(huffman_decode(payload, params, n, 32), symbols)
    assert "block_size" not in huffman_encode(symbols[:10_000], 32)[1]
    assert -(-2_000_000 // params["block_size"]) >= LOCKSTEP_MIN_LANES


def test_a_count_the_payload_cannot_hold_is_refused_before_decoding():
    symbols = np.zeros(1000, dtype=np.int64)
    payload, params = huffman_encode(symbols, 1)
    assert len(payload) >= 1000 // 8  # one bit per symbol even for a one-symbol code
    with pytest.raises(NetshrinkFormatError, match="cannot hold"):
        huffman_decode(payload, params, 8 * len(payload) + 1, 1)
