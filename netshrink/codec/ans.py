"""ANS entropy stage through ``constriction`` (Duda 2013; Bamler 2022, the ``constriction`` library).

Asymmetric numeral systems code i.i.d. symbols within a fraction of a percent of the empirical
Shannon entropy, where Huffman (Han et al. 2016, section 4) loses up to a bit per symbol on
skewed alphabets. The model is a ``constriction.stream.model.Categorical`` built from the
*integer* symbol counts stored in params, so encoder and decoder quantise exactly the same
probabilities (``perfect=False`` on both sides).
"""

from __future__ import annotations

import math
from typing import Any

import constriction
import numpy as np

from netshrink.codec.bitpack import symbol_dtype
from netshrink.codec.checks import checked_int_list, checked_stream_shape, checked_symbols
from netshrink.core.errors import NetshrinkFormatError

#: constriction's ``Categorical`` quantises probabilities to multiples of 2**-PRECISION, and
#: (``perfect=False``) gives every symbol of nonzero count at least one quantum
PRECISION = 24
#: bits of coder state a payload can hold beyond the information of its symbols
STATE_SLACK_BITS = 64


def _categorical(counts: np.ndarray) -> Any:
    """The coding model: probabilities proportional to ``counts`` (float64, deterministic)."""
    probabilities = counts.astype(np.float64) / float(counts.sum())
    return constriction.stream.model.Categorical(probabilities, perfect=False)


def ans_encode(symbols: np.ndarray, alphabet_size: int) -> tuple[bytes, dict[str, Any]]:
    """ANS-code ``symbols`` (ints in ``0 .. alphabet_size-1``) under their empirical distribution.

    Returns ``(payload, params)``: the payload is constriction's compressed uint32 words in
    little-endian order; params is ``{"counts": [...]}`` with one count per alphabet symbol.
    """
    symbols = checked_symbols(symbols, alphabet_size)
    counts = np.bincount(symbols.astype(np.int64), minlength=alphabet_size)
    params = {"counts": counts.tolist()}
    if np.count_nonzero(counts) <= 1:
        return b"", params  # a constant stream carries no information: the counts say it all
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(symbols.astype(np.int32), _categorical(counts))
    return coder.get_compressed().astype("<u4").tobytes(), params


def ans_max_symbols(counts: np.ndarray, nbytes: int) -> int | None:
    """Most symbols an ANS payload of ``nbytes`` can honestly hold under ``counts``; None for a
    one-symbol stream, which costs no bits at all (its bound is the tensor's, ``validate``).

    With ``k`` used symbols the likeliest has quantised probability at most
    ``1 - (k - 1) / 2**PRECISION``, so each symbol carries at least ``-log2`` of that many bits of
    information, and a payload of ``P`` bits decodes at most ``P + STATE_SLACK_BITS`` bits of it
    (Duda 2013: the coder state grows by ``-log2 p`` per symbol). A non-empty stream of two or more
    used symbols leaves the coder state non-initial, so its payload is at least one word.
    """
    used = int(np.count_nonzero(counts))
    if used <= 1:
        return None
    if nbytes == 0:
        return 0
    min_bits = -math.log2(1 - (used - 1) / 2 ** PRECISION)
    return int((8 * nbytes + STATE_SLACK_BITS) / min_bits)


def ans_decode(payload: bytes, params: dict, count: int, alphabet_size: int) -> np.ndarray:
    """Decode ``count`` symbols written by :func:`ans_encode`.

    Returns uint8 when ``alphabet_size <= 256``, else uint16. Checks: params hold one
    non-negative integer count per symbol summing to ``count``; ``count`` is within
    ``ans_max_symbols`` of the payload; the payload is whole 32-bit words; the coder is exactly
    empty after ``count`` symbols; the decoded histogram equals the stored counts. A one-symbol
    stream is written as an empty payload and decoded without the coder. Any failure, including
    one inside constriction, is a ``NetshrinkFormatError``.
    """
    if not isinstance(params, dict):
        raise NetshrinkFormatError("ans params must be a JSON object")
    count, alphabet_size = checked_stream_shape(count, alphabet_size)
    counts = checked_int_list(params.get("counts"), alphabet_size, 0, count, "ans params['counts']")
    if int(counts.sum()) != count:
        raise NetshrinkFormatError(f"ans symbol counts sum to {int(counts.sum())}, not the declared {count}")
    out_dtype = symbol_dtype(alphabet_size)
    limit = ans_max_symbols(counts, len(payload))
    if limit is None:  # zero or one used symbol: no information, nothing stored
        if payload:
            raise NetshrinkFormatError(f"ans payload of a one-symbol stream must be empty, got {len(payload)} bytes")
        return np.full(count, int(np.argmax(counts)), dtype=out_dtype)
    if count > limit:
        raise NetshrinkFormatError(f"ans payload of {len(payload)} bytes cannot hold {count} symbols of these counts")
    if len(payload) % 4:
        raise NetshrinkFormatError(f"ans payload of {len(payload)} bytes is not a whole number of 32-bit words")
    words = np.frombuffer(payload, dtype="<u4").astype(np.uint32)
    try:
        coder = constriction.stream.stack.AnsCoder(words)
        decoded = coder.decode(_categorical(counts), count)
        exhausted = coder.is_empty()
    except (ValueError, RuntimeError, AssertionError, OverflowError) as error:  # constriction's errors
        raise NetshrinkFormatError(f"ans payload is corrupt: {error}") from None
    decoded = np.asarray(decoded)
    if not exhausted or decoded.size != count:
        raise NetshrinkFormatError("ans payload is corrupt: it does not decode to exactly the declared symbols")
    # one pass: a negative symbol makes bincount raise, one past the alphabet lengthens its result
    try:
        histogram = np.bincount(decoded, minlength=alphabet_size)
    except ValueError:
        histogram = None
    if histogram is None or histogram.size != alphabet_size:
        raise NetshrinkFormatError("ans payload is corrupt: it decodes to a symbol outside the alphabet")
    if not np.array_equal(histogram, counts):
        raise NetshrinkFormatError("ans payload is corrupt: decoded symbol counts differ from the stored counts")
    return decoded.astype(out_dtype)
