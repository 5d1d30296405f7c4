"""How the .nsk metadata document is stored in the safetensors string metadata: as JSON text, or
(format version 4, what ``save`` writes when it is smaller) deflated and base64-encoded.

The document of a small compressed model is a large share of its file: the transform log and
the entropy coders' symbol counts are around 3 KB of JSON against some 25 KB of streams for a
Deep-Compressed LeNet-300-100, and deflate (RFC 1951, the standard library's ``zlib``) shrinks
it about 3.5x. safetensors metadata values are strings, hence base64 (4/3 of the deflated bytes).

Reading is bounded by the file's real bytes: the inflated text may be at most
``MAX_INFLATION`` times the deflated bytes (and never needs to be below ``MIN_DOCUMENT_CAP``).
Real documents inflate far less, since every tensor carries a CRC-32 that does not compress, so a
"deflate bomb" is refused after inflating at most that much.
"""

from __future__ import annotations

import base64
import binascii
import zlib

from netshrink.core.errors import NetshrinkFormatError

#: prefix of a deflated document; a JSON document starts with "{"
DEFLATED_PREFIX = "zb64:"
MAX_INFLATION = 256
MIN_DOCUMENT_CAP = 1 << 20


def pack_document(text: str) -> str:
    """``text`` (compact JSON) as stored: deflated when that is shorter, else as it is."""
    packed = DEFLATED_PREFIX + base64.b64encode(zlib.compress(text.encode(), 9)).decode("ascii")
    return packed if len(packed) < len(text) else text


def unpack_document(stored: str) -> str:
    """The JSON text of a stored document (``pack_document``'s inverse), inflated within bounds."""
    if not stored.startswith(DEFLATED_PREFIX):
        return stored
    try:
        deflated = base64.b64decode(stored[len(DEFLATED_PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        raise NetshrinkFormatError("the deflated metadata document is not valid base64") from None
    cap = max(MIN_DOCUMENT_CAP, MAX_INFLATION * len(deflated))
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(deflated, cap)
    except zlib.error as error:
        raise NetshrinkFormatError(f"the deflated metadata document is corrupt ({error})") from None
    if inflater.unconsumed_tail or not inflater.eof:
        raise NetshrinkFormatError(f"the deflated metadata document inflates past {cap} bytes or is truncated")
    if inflater.unused_data:
        raise NetshrinkFormatError("the deflated metadata document has trailing bytes")
    try:
        return text.decode("utf-8")
    except UnicodeDecodeError:
        raise NetshrinkFormatError("the metadata document is not UTF-8 text") from None

