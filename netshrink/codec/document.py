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
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from typing import Any

from netshrink.core.errors import NetshrinkFormatError

DEFLATED_VERSION = 4
MAX_INFLATION = 32
MIN_DOCUMENT_CAP = 1 << 20
MAX_DOCUMENT_BYTES = 8 << 20


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


def read_document(stored: str) -> Any:
    """The JSON value of a stored document (``pack_document``'s inverse), inflated within bounds.
    ``json`` errors (``ValueError``, ``RecursionError``) propagate for the caller to report."""
    value = json.loads(stored)
    if not (isinstance(value, dict) and "deflated" in value):
        return value
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
        return json.loads(text.decode("utf-8"))
    except UnicodeDecodeError:
        raise NetshrinkFormatError("the metadata document is not UTF-8 text") from None
