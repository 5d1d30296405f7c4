import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netshrink.codec.ans import ans_decode, ans_encode
from netshrink.codec.entropy import shannon_bits
from netshrink.core.errors import NetshrinkFormatError
from tests.codec.corrupt import bit_flips, decodes_or_refuses, param_edits, truncations


@settings(max_examples=60, deadline=None)
@given(
    alphabet_size=st.integers(1, 1000),
    n=st.integers(0, 3000),
    skew=st.floats(0.05, 50.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_round_trip(alphabet_size, n, skew, seed):
    rng = np.random.default_rng(seed)
    p = np.exp(-np.arange(alphabet_size) / skew)
    symbols = rng.choice(alphabet_size, n, p=p / p.sum())
    payload, params = ans_encode(symbols, alphabet_size)
    assert np.array_equal(ans_decode(payload, params, n, alphabet_size), symbols)


def test_close_to_the_entropy_on_a_skewed_stream():
    rng = np.random.default_rng(0)
    p = np.exp(-np.arange(32) / 3.0)
    symbols = rng.choice(32, 1_000_000, p=p / p.sum())
    payload, params = ans_encode(symbols, 32)
    stored_bits = 8 * (len(payload) + len(json.dumps(params)))
    assert stored_bits / shannon_bits(symbols, 32) < 1.005


@pytest.fixture(scope="module")
def encoded():
    symbols = np.random.default_rng(1).integers(0, 20, 4000) % 7
    payload, params = ans_encode(symbols, 20)
    return symbols, payload, params


def test_malformed_payloads_raise_only_format_errors(encoded):
    symbols, payload, params = encoded
    for bad in truncations(payload) + [payload + b"\x01\x00\x00\x00", payload[:-1]]:
        with pytest.raises(NetshrinkFormatError):
            ans_decode(bad, params, symbols.size, 20)
    for bad in bit_flips(payload, 100):
        decodes_or_refuses(ans_decode, bad, params, symbols.size, 20)


def test_malformed_params_raise_only_format_errors(encoded):
    symbols, payload, params = encoded
    for bad in param_edits(params) + [None, {}]:
        with pytest.raises(NetshrinkFormatError):
            ans_decode(payload, bad, symbols.size, 20)
    shifted = list(params["counts"])
    shifted[0], shifted[1] = shifted[0] + 1, shifted[1] - 1
    decodes_or_refuses(ans_decode, payload, {"counts": shifted}, symbols.size, 20)
    for count in (-1, 0, symbols.size + 1):
        with pytest.raises(NetshrinkFormatError):
            ans_decode(payload, params, count, 20)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 200_000), rare=st.integers(1, 50), alphabet_size=st.integers(2, 300),
       seed=st.integers(0, 2**32 - 1))
def test_every_encoded_stream_is_within_its_symbol_bound(n, rare, alphabet_size, seed):
    """The bound the decoder enforces before decoding (symbols per payload bit, from the likeliest
    symbol's quantised probability) never refuses what the encoder writes, even very skewed streams."""
    from netshrink.codec.ans import ans_max_symbols

    rng = np.random.default_rng(seed)
    symbols = np.zeros(n, dtype=np.int64)
    symbols[rng.integers(0, n, min(rare, n))] = rng.integers(1, alphabet_size, min(rare, n))
    payload, params = ans_encode(symbols, alphabet_size)
    limit = ans_max_symbols(np.array(params["counts"]), len(payload))
    assert limit is None or n <= limit
    assert np.array_equal(ans_decode(payload, params, n, alphabet_size), symbols)


def test_a_one_symbol_stream_is_empty_and_decoded_without_the_coder():
    payload, params = ans_encode(np.full(10**6, 3), 8)
    assert payload == b""
    assert np.array_equal(ans_decode(payload, params, 10**6, 8), np.full(10**6, 3))
    with pytest.raises(NetshrinkFormatError, match="must be empty"):
        ans_decode(b"\0\0\0\0", params, 10**6, 8)


def test_an_empty_payload_cannot_hold_a_stream_of_two_symbols():
    """A 2.6 KB file declared 256 MiB of float planes as ANS streams with empty payloads: the
    coder decoded any count from zero bytes. Now refused before the coder runs."""
    with pytest.raises(NetshrinkFormatError, match="cannot hold"):
        ans_decode(b"", {"counts": [2**26 - 1, 1]}, 2**26, 2)
