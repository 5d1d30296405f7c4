"""``float_bytes``: dense floats coded losslessly by exponent and mantissa planes (ZipNN, DFloat11).

See ``netshrink.codec.float_bytes`` for the planes; this unit stores them as one ``float`` stream.
"""

from __future__ import annotations

import numpy as np

from netshrink.codec.encodings.base import (
    BITS_NUMPY,
    BOOKKEEPING_BYTES,
    FIXED_WORK_BYTES,
    FLOAT,
    FLOAT_DTYPES,
    WORK_BYTES_PER_SYMBOL,
    Encoded,
    Encoding,
    Stream,
    itemsize,
)
from netshrink.codec.float_bytes import FLOAT_LAYOUTS, decode_float_bytes, encode_float_bytes
from netshrink.core.errors import NetshrinkFormatError


class FloatBytes(Encoding):
    name = "float_bytes"
    roles = {"float": FLOAT}

    def encode(self, bits, dtype, shape, entropy) -> Encoded | None:
        if dtype not in FLOAT_DTYPES or bits.size == 0:
            return None
        payload, params = encode_float_bytes(bits.view(f"<u{bits.itemsize}"), dtype)
        return Encoded(["float_bytes"], {}, [Stream("float", bytes(payload), None, params)])

    def decode(self, params, streams, dtype, shape, count) -> np.ndarray:
        stream = streams["float"]
        values = np.asarray(decode_float_bytes(stream.data, stream.params, count, dtype)).reshape(-1)
        if values.size != count or values.itemsize != itemsize(dtype):
            raise NetshrinkFormatError("float_bytes stream decoded to the wrong size")
        return values.view(BITS_NUMPY[itemsize(dtype)].newbyteorder("="))

    def work_bytes(self, params, dtype, count) -> int:
        """The words, and one plane at a time (``decode_float_bytes`` keeps no plane)."""
        if dtype not in FLOAT_LAYOUTS:
            return count * itemsize(dtype) + BOOKKEEPING_BYTES
        return count * (2 * itemsize(dtype) + WORK_BYTES_PER_SYMBOL) + FIXED_WORK_BYTES + BOOKKEEPING_BYTES
