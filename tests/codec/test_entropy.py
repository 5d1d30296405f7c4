import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netshrink.codec.entropy import (
    METHODS,
    decode_symbols,
    encode_symbols,
    shannon_bits,
    stored_size,
)
from netshrink.core.errors import NetshrinkFormatError
from tests.codec.corrupt import bit_flips, decodes_or_refuses, param_edits, truncations


@settings(max_examples=50, deadline=None)
@given(
    alphabet_size=st.integers(1, 70000).filter(lambda a: a <= 65536),
    n=st.integers(0, 2000),
    skew=st.floats(0.05, 100.0),
    method=st.sampled_from(METHODS + ("auto",)),
    seed=st.integers(0, 2**32 - 1),
)
def test_round_trip_every_method(alphabet_size, n, skew, method, seed):
    rng = np.random.default_rng(seed)
    p = np.exp(-np.arange(min(alphabet_size, 2000)) / skew)
    symbols = rng.choice(p.size, n, p=p / p.sum()) * (alphabet_size // p.size)
    used, payload, params = encode_symbols(symbols, alphabet_size, method)
    assert used in METHODS and (method == "auto" or used == method)
    json.dumps(params)
    decoded = decode_symbols(used, payload, params, n, alphabet_size)
    assert np.array_equal(decoded, symbols)


def test_auto_keeps_the_smallest():
    rng = np.random.default_rng(0)
    for symbols, alphabet in [(rng.integers(0, 256, 5000), 256), (rng.geometric(0.5, 5000) % 32, 32)]:
        sizes = {m: stored_size(*encode_symbols(symbols, alphabet, m)[1:]) for m in METHODS}
        used, payload, params = encode_symbols(symbols, alphabet)
        assert stored_size(payload, params) == min(sizes.values())
        assert sizes[used] == min(sizes.values())


def test_uniform_stream_stays_packed_and_skewed_stream_is_coded():
    rng = np.random.default_rng(1)
    assert encode_symbols(rng.integers(0, 16, 100_000), 16)[0] == "none"
    assert encode_symbols(rng.geometric(0.6, 100_000) % 16, 16)[0] != "none"


def test_shannon_bits():
    assert shannon_bits(np.array([0, 1, 0, 1]), 2) == pytest.approx(4.0)
    assert shannon_bits(np.array([3, 3, 3]), 4) == 0.0
    assert shannon_bits(np.array([], dtype=int), 4) == 0.0


@pytest.mark.parametrize("method", METHODS)
def test_malformed_input_raises_only_format_errors(method):
    symbols = np.random.default_rng(2).geometric(0.3, 3000) % 12
    _, payload, params = encode_symbols(symbols, 12, method)
    for bad in truncations(payload):
        with pytest.raises(NetshrinkFormatError):
            decode_symbols(method, bad, params, symbols.size, 12)
    for bad in bit_flips(payload, 60):
        decodes_or_refuses(decode_symbols, method, bad, params, symbols.size, 12)
    for bad in param_edits(params) + [None, "x", {"junk": 1}]:
        decodes_or_refuses(decode_symbols, method, payload, bad, symbols.size, 12)
    for bad_method in ("zip", None, 3):
        with pytest.raises(NetshrinkFormatError):
            decode_symbols(bad_method, payload, params, symbols.size, 12)
    for bad_alphabet in (0, -3, 2**17, "12", None):
        with pytest.raises(NetshrinkFormatError):
            decode_symbols(method, payload, params, symbols.size, bad_alphabet)
    for bad_count in (-1, "3", None, 1.5):
        with pytest.raises(NetshrinkFormatError):
            decode_symbols(method, payload, params, bad_count, 12)


def test_packed_values_beyond_the_alphabet_are_refused():
    with pytest.raises(NetshrinkFormatError):
        decode_symbols("none", bytes([0xFF]), {}, 2, 12)  # 4-bit values 15 >= 12
