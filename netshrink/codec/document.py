"""How the .nsk metadata document is stored in the safetensors string metadata: as JSON text, or
(format version 4, what ``save`` writes when it is smaller) deflated inside a small JSON wrapper
``{"format_version": 4, "deflated": base64}``.

The document of a small compressed model is a large share of its file: the transform log and
the entropy coders' symbol counts are around 3 KB of JSON against some 25 KB of streams for a
Deep-Compressed LeNet-300-100, and deflate (RFC 1951, the standard library's ``zlib``) shrinks
it about 3.5x. safetensors metadata values are strings, hence base64 (4/3 of the deflated bytes).
The wrapper names the format version in plain text, so a reader too old for version 4 says so.

Reading is bounded by the file's real bytes: the inflated text may be at most ``MAX_INFLATION``
times the deflated bytes (a floor of ``MIN_DOCUMENT_CAP`` so small documents always fit) and
never more than ``MAX_DOCUMENT_BYTES``; a "deflate bomb" is refused after inflating at most that
much. Real documents inflate far less (every tensor carries a CRC-32, which does not compress),
and ``pack_document`` deflates only a document the reader's bound admits, storing any other as
plain JSON (bounded by the file size, as in version 3).

The JSON itself is held to what ``json`` and every later step handle in bounded work: nesting at
most ``MAX_DEPTH`` deep (deeper documents ended in a raw ``RecursionError`` in the deep copies of
the log), no ``NaN``/``Infinity`` literals, and every string valid UTF-8 (a ``\\ud800`` escape
decodes to a lone surrogate that no stream can print: a raw ``UnicodeEncodeError``).
``read_counted_document`` returns the value with the bytes it counts for the reader's budgets:
the stored text as it is when deflated, else its compact form, so spaces padding a plain
document do not raise the budget.
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from typing import Any

import numpy as np

from netshrink.core.errors import NetshrinkFormatError

DEFLATED_VERSION = 4
MAX_INFLATION = 32
MIN_DOCUMENT_CAP = 1 << 20
MAX_DOCUMENT_BYTES = 8 << 20
#: deepest nesting of arrays and objects a document may have (real documents nest about 8 deep)
MAX_DEPTH = 32
_OPEN, _CLOSE = (ord("["), ord("{")), (ord("]"), ord("}"))


def inflation_cap(deflated_bytes: int) -> int:
    """The most bytes a deflated document of ``deflated_bytes`` may inflate to."""
    return min(MAX_DOCUMENT_BYTES, max(MIN_DOCUMENT_CAP, MAX_INFLATION * deflated_bytes))


def pack_document(text: str) -> str:
    """``text`` (compact JSON) as stored: wrapped and deflated when that is shorter and within the
    reader's bound, else as it is."""
    raw = text.encode()
    deflated = zlib.compress(raw, 9)
    packed = json.dumps({"format_version": DEFLATED_VERSION, "deflated": base64.b64encode(deflated).decode("ascii")},
                        separators=(",", ":"))
    return packed if len(packed) < len(text) and len(raw) <= inflation_cap(len(deflated)) else text


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _bracket_depth(text: str | bytes) -> int:
    """The deepest bracket nesting of ``text``, brackets inside strings counted too: an upper bound
    of the JSON nesting depth, found at C speed (no Python step per character)."""
    data = np.frombuffer(text.encode() if isinstance(text, str) else text, dtype=np.uint8)
    where = np.flatnonzero((data == _OPEN[0]) | (data == _OPEN[1]) | (data == _CLOSE[0]) | (data == _CLOSE[1]))
    if where.size == 0:
        return 0
    steps = np.where((data[where] == _OPEN[0]) | (data[where] == _OPEN[1]), 1, -1)
    return int(np.cumsum(steps, dtype=np.int64).max())


def _nesting_depth(value: Any) -> int:
    """The exact nesting depth of a parsed value (iterative: no recursion on untrusted input)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth + 1)
            if deepest > MAX_DEPTH:
                return deepest
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _parsed(text: str | bytes) -> Any:
    """``text`` parsed as strict JSON nested at most ``MAX_DEPTH`` deep."""
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise NetshrinkFormatError(f"the metadata document nests deeper than {MAX_DEPTH}") from None
    except ValueError as error:  # JSONDecodeError, NaN, over-long integers, invalid UTF-8 bytes
        raise NetshrinkFormatError(f"metadata is not valid JSON ({error})") from None
    if _bracket_depth(text) > MAX_DEPTH and _nesting_depth(value) > MAX_DEPTH:
        raise NetshrinkFormatError(f"the metadata document nests deeper than {MAX_DEPTH}")
    return value


def _compact_bytes(value: Any) -> int:
    """Bytes of ``value`` as compact UTF-8 JSON; refuses a lone surrogate in any string."""
    try:
        return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    except UnicodeEncodeError:
        raise NetshrinkFormatError("the metadata document holds a string that is not valid UTF-8 "
                                   "(a lone surrogate escape)") from None


def read_document(stored: str) -> Any:
    """The JSON value of a stored document (``pack_document``'s inverse), inflated within bounds;
    every failure is a ``NetshrinkFormatError``."""
    return read_counted_document(stored)[0]


def read_counted_document(stored: str) -> tuple[Any, int]:
    """``read_document``'s value and the bytes it counts for the reader's budgets (see the module
    docstring)."""
    value = _parsed(stored)
    if not (isinstance(value, dict) and "deflated" in value):
        return value, _compact_bytes(value)
    if set(value) != {"format_version", "deflated"} or value["format_version"] != DEFLATED_VERSION \
            or not isinstance(value["deflated"], str):
        raise NetshrinkFormatError(f"a deflated document is {{\"format_version\": {DEFLATED_VERSION}, "
                                   "\"deflated\": base64}} and nothing else")
    try:
        deflated = base64.b64decode(value["deflated"], validate=True)
    except (binascii.Error, ValueError):
        raise NetshrinkFormatError("the deflated metadata document is not valid base64") from None
    cap = inflation_cap(len(deflated))
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(deflated, cap)
    except zlib.error as error:
        raise NetshrinkFormatError(f"the deflated metadata document is corrupt ({error})") from None
    if inflater.unconsumed_tail:
        raise NetshrinkFormatError(f"the deflated metadata document inflates past {cap} bytes")
    if not inflater.eof:
        raise NetshrinkFormatError("the deflated metadata document is truncated")
    if inflater.unused_data:
        raise NetshrinkFormatError("the deflated metadata document has trailing bytes")
    try:
        text = text.decode("utf-8")
    except UnicodeDecodeError:
        raise NetshrinkFormatError("the metadata document is not UTF-8 text") from None
    document = _parsed(text)
    _compact_bytes(document)
    return document, len(stored.encode("utf-8"))
