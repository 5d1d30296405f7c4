"""ANS entropy stage through ``constriction`` (Duda 2013; Bamler 2022, the ``constriction`` library).

Asymmetric numeral systems code i.i.d. symbols within a fraction of a percent of the empirical
Shannon entropy, where Huffman (Han et al. 2016, section 4) loses up to a bit per symbol on
skewed alphabets. The model is a ``constriction.stream.model.Categorical`` built from the
*integer* symbol counts stored in params, so encoder and decoder quantise exactly the same
probabilities (``perfect=False`` on both sides).
"""

from __future__ import annotations

from typing import Any

import constriction
import numpy as np

from netshrink.codec.bitpack import symbol_dtype
from netshrink.core.errors import NetshrinkFormatError

MAX_ALPHABET = 1 << 16


def _categorical(counts: np.ndarray) -> Any:
    """The coding model: probabilities proportional to ``counts`` (float64, deterministic)."""
    probabilities = counts.astype(np.float64) / float(counts.sum())
    return constriction.stream.model.Categorical(probabilities, perfect=False)


def ans_encode(symbols: np.ndarray, alphabet_size: int) -> tuple[bytes, dict[str, Any]]:
    """ANS-code ``symbols`` (ints in ``0 .. alphabet_size-1``) under their empirical distribution.

    Returns ``(payload, params)``: the payload is constriction's compressed uint32 words in
    little-endian order; params is ``{"counts": [...]}`` with one count per alphabet symbol.
    """
    symbols = np.asarray(symbols).reshape(-1)
    if not 1 <= alphabet_size <= MAX_ALPHABET:
        raise ValueError(f"alphabet_size must be 1..{MAX_ALPHABET}, got {alphabet_size}")
    if symbols.size and (symbols.min() < 0 or symbols.max() >= alphabet_size):
        raise ValueError(f"symbols must lie in 0..{alphabet_size - 1}")
    counts = np.bincount(symbols.astype(np.int64), minlength=alphabet_size)
    params = {"counts": counts.tolist()}
    if symbols.size == 0:
        return b"", params
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(symbols.astype(np.int32), _categorical(_coding_counts(counts)))
    return coder.get_compressed().astype("<u4").tobytes(), params


def _coding_counts(counts: np.ndarray) -> np.ndarray:
    """Counts as given to the model; a one-symbol alphabet gets a dummy second symbol."""
    return counts if counts.size > 1 else np.append(counts, 0)


def ans_decode(payload: bytes, params: dict, count: int, alphabet_size: int) -> np.ndarray:
    """Decode ``count`` symbols written by :func:`ans_encode`.

    Returns uint8 when ``alphabet_size <= 256``, else uint16. Checks: params hold one
    non-negative integer count per symbol summing to ``count``; the payload is whole 32-bit
    words; the coder is exactly empty after ``count`` symbols; the decoded histogram equals the
    stored counts. Any failure, including one inside constriction, is a ``NetshrinkFormatError``.
    """
    if not isinstance(params, dict):
        raise NetshrinkFormatError("ans params must be a JSON object")
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise NetshrinkFormatError(f"symbol count {count!r} must be a non-negative integer")
    if not 1 <= alphabet_size <= MAX_ALPHABET:
        raise NetshrinkFormatError(f"alphabet size {alphabet_size} must be 1..{MAX_ALPHABET}")
    raw = params.get("counts")
    if not isinstance(raw, list) or len(raw) != alphabet_size:
        raise NetshrinkFormatError(f"ans params['counts'] must be a list of {alphabet_size} integers")
    if not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= count for x in raw):
        raise NetshrinkFormatError(f"ans symbol counts must be integers in 0..{count}")
    counts = np.asarray(raw, dtype=np.int64)
    if int(counts.sum()) != count:
        raise NetshrinkFormatError(f"ans symbol counts sum to {int(counts.sum())}, not the declared {count}")
    if count == 0:
        if payload:
            raise NetshrinkFormatError(f"ans payload of an empty stream must be empty, got {len(payload)} bytes")
        return np.zeros(0, dtype=symbol_dtype(alphabet_size))
    if len(payload) % 4:
        raise NetshrinkFormatError(f"ans payload of {len(payload)} bytes is not a whole number of 32-bit words")
    words = np.frombuffer(payload, dtype="<u4").astype(np.uint32)
    try:
        coder = constriction.stream.stack.AnsCoder(words)
        decoded = coder.decode(_categorical(_coding_counts(counts)), count)
        exhausted = coder.is_empty()
    except (ValueError, RuntimeError, AssertionError, OverflowError) as error:  # constriction's errors
        raise NetshrinkFormatError(f"ans payload is corrupt: {error}") from None
    decoded = np.asarray(decoded)
    if not exhausted or decoded.size != count:
        raise NetshrinkFormatError("ans payload is corrupt: it does not decode to exactly the declared symbols")
    if decoded.min() < 0 or decoded.max() >= alphabet_size:
        raise NetshrinkFormatError("ans payload is corrupt: it decodes to a symbol outside the alphabet")
    if not np.array_equal(np.bincount(decoded, minlength=alphabet_size), counts):
        raise NetshrinkFormatError("ans payload is corrupt: decoded symbol counts differ from the stored counts")
    return decoded.astype(symbol_dtype(alphabet_size))
