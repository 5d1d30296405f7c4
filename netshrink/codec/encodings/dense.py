"""``dense``: the bit patterns as they are, little-endian. Exact for every dtype, so always a candidate."""

from __future__ import annotations

import numpy as np

from netshrink.codec.encodings.base import (
    BOOKKEEPING_BYTES,
    BYTES,
    Encoded,
    Encoding,
    Stream,
    bits_from_bytes,
    itemsize,
)


class Dense(Encoding):
    name = "dense"
    roles = {"raw": BYTES}

    def encode(self, bits, dtype, shape, entropy) -> Encoded:
        """The tensor's own bytes, not copied (the writer streams them to the file)."""
        return Encoded(["dense"], {}, [Stream("raw", memoryview(np.ascontiguousarray(bits)).cast("B"))])

    def raw_bytes(self, role, params, dtype, count) -> int:
        return count * itemsize(dtype)

    def decode(self, params, streams, dtype, shape, count) -> np.ndarray:
        return bits_from_bytes(streams["raw"].data, dtype)

    def work_bytes(self, params, dtype, count) -> int:
        return count * itemsize(dtype) + BOOKKEEPING_BYTES
