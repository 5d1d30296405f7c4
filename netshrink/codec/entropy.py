"""The entropy stage the .nsk container calls: no coding, Huffman, or ANS, chosen per stream.

Deep Compression's last stage (Han et al. 2016, section 4) Huffman-codes the quantized weight
indices and the sparse index gaps. ``encode_symbols(..., "auto")`` tries every method and keeps
the one with the fewest stored bytes (payload plus its JSON params), so a near-uniform stream
stays packed and a skewed one gets ANS or Huffman.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from netshrink.codec.ans import ans_decode, ans_encode, ans_max_symbols
from netshrink.codec.bitpack import pack_bits, unpack_bits
from netshrink.codec.checks import checked_stream_shape, checked_symbols
from netshrink.codec.huffman import huffman_decode, huffman_encode, huffman_max_symbols
from netshrink.core.errors import NetshrinkFormatError

METHODS = ("none", "huffman", "ans")
#: ``encode_symbols(..., "fast")``: as ``"auto"``, but a stream of at least ``LONG_STREAM`` symbols
#: takes Huffman when it stores at most ``FAST_SLACK`` more than the smallest: the lockstep Huffman
#: decoder runs at about 1.5x constriction's ANS decoder on long streams (47 against 33 M symbols/s
#: on a 17-symbol stream of 16M, ``benchmarks/io.py``), for a fraction of a percent of the bytes
LONG_STREAM = 1 << 16
FAST_SLACK = 0.01


def packed_bits_per_symbol(alphabet_size: int) -> int:
    """Bits per symbol of the "none" method: ``ceil(log2(alphabet_size))``, at least 1."""
    return max(1, (int(alphabet_size) - 1).bit_length())


def shannon_bits(symbols: np.ndarray, alphabet_size: int) -> float:
    """Total empirical Shannon entropy of ``symbols`` in bits: ``-sum n_s * log2(n_s / n)``."""
    symbols = np.asarray(symbols).reshape(-1)
    if symbols.size == 0:
        return 0.0
    counts = np.bincount(symbols.astype(np.int64), minlength=alphabet_size)
    counts = counts[counts > 0].astype(np.float64)
    return float(-(counts * np.log2(counts / symbols.size)).sum())


def stored_size(payload: bytes, params: dict[str, Any]) -> int:
    """Bytes a stream costs in the container: its payload plus its params as JSON."""
    return len(payload) + len(json.dumps(params))


def _encode_with(method: str, symbols: np.ndarray, alphabet_size: int) -> tuple[bytes, dict[str, Any]]:
    if method == "none":
        return pack_bits(symbols, packed_bits_per_symbol(alphabet_size)), {}
    if method == "huffman":
        return huffman_encode(symbols, alphabet_size)
    return ans_encode(symbols, alphabet_size)


def encode_symbols(
    symbols: np.ndarray, alphabet_size: int, method: str = "auto"
) -> tuple[str, bytes, dict[str, Any]]:
    """Entropy-code integer ``symbols`` in ``0 .. alphabet_size-1`` (alphabet at most 2**16).

    ``method`` is one of :data:`METHODS`, ``"auto"`` (the smallest :func:`stored_size`, ties
    going to the simpler method) or ``"fast"`` (see ``FAST_SLACK``). Returns
    ``(method_used, payload, params)``; params is a small JSON-serialisable dict.
    """
    if method not in ("auto", "fast") and method not in METHODS:
        raise ValueError(f"unknown entropy method {method!r}; choose one of {METHODS + ('auto', 'fast')}")
    symbols = checked_symbols(symbols, alphabet_size)
    candidates = METHODS if method in ("auto", "fast") else (method,)
    coded = {name: _encode_with(name, symbols, alphabet_size) for name in candidates}
    sizes = {name: stored_size(*coded[name]) for name in candidates}
    best = min(candidates, key=lambda name: (sizes[name], candidates.index(name)))
    if method == "fast" and symbols.size >= LONG_STREAM and sizes["huffman"] <= (1 + FAST_SLACK) * sizes[best]:
        best = "huffman"
    return (best, *coded[best])


def max_symbols(method: Any, params: Any, nbytes: int, alphabet_size: int) -> int | None:
    """Most symbols a stream of ``nbytes`` payload bytes can honestly hold, from its method and
    table alone (no decoding): packed bits for "none", the shortest code for Huffman, the likeliest
    symbol's information for ANS. None where the bytes bound nothing (a one-symbol ANS stream
    costs no bits; the tensor's element bound holds it) or the params are malformed (the decoder
    refuses those)."""
    if method == "none":
        return 8 * nbytes // packed_bits_per_symbol(alphabet_size)
    if method == "huffman":
        return huffman_max_symbols(params, nbytes)
    counts = params.get("counts") if isinstance(params, dict) else None
    if method == "ans" and isinstance(counts, list) and all(isinstance(c, int) and 0 <= c < 2 ** 62 for c in counts):
        return ans_max_symbols(np.asarray(counts, dtype=np.int64), nbytes)
    return None


def decode_symbols(method: str, payload: bytes, params: dict, count: int, alphabet_size: int) -> np.ndarray:
    """Decode ``count`` symbols written by :func:`encode_symbols`; inputs are untrusted.

    Returns uint8 when ``alphabet_size <= 256``, else uint16; every value is below
    ``alphabet_size``. A wrong method, count, alphabet, params or payload raises
    ``NetshrinkFormatError`` with a one-line reason.
    """
    if not isinstance(method, str) or method not in METHODS:
        raise NetshrinkFormatError(f"unknown entropy method {method!r}; expected one of {METHODS}")
    if not isinstance(params, dict):
        raise NetshrinkFormatError(f"entropy params must be a JSON object, got {type(params).__name__}")
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise NetshrinkFormatError(f"entropy payload must be bytes, got {type(payload).__name__}")
    count, alphabet_size = checked_stream_shape(count, alphabet_size)
    payload = bytes(payload)
    limit = max_symbols(method, params, len(payload), alphabet_size)
    if limit is not None and count > limit:
        raise NetshrinkFormatError(f"{method} payload of {len(payload)} bytes cannot hold {count} symbols")
    if method == "none":
        if params:
            raise NetshrinkFormatError(f"entropy method 'none' takes no params, got keys {sorted(params)}")
        decoded = unpack_bits(payload, packed_bits_per_symbol(alphabet_size), count)
        if decoded.size and int(decoded.max()) >= alphabet_size:
            raise NetshrinkFormatError(f"packed symbols exceed the alphabet size {alphabet_size}")
        return decoded
    if method == "huffman":
        return huffman_decode(payload, params, count, alphabet_size)
    return ans_decode(payload, params, count, alphabet_size)
