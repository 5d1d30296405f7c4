"""``binary``: rows holding at most two values ``a_r, b_r`` (BinaryConnect, Courbariaux et al. 2015;
XNOR-Net's scaled signs, Rastegari et al. 2016, section 3.1): one coded bit per weight plus the
pairs."""

from __future__ import annotations

import numpy as np

from netshrink.codec.encodings.base import (
    BYTES,
    FLOAT_DTYPES,
    SYMBOLS,
    Encoded,
    Encoding,
    Stream,
    bits_from_bytes,
    decode_symbol_stream,
    itemsize,
    param_int,
    symbol_stream,
)
from netshrink.core.errors import NetshrinkFormatError


class Binary(Encoding):
    name = "binary"
    roles = {"row_values": BYTES, "bits": SYMBOLS}
    values = False  # needs the tensor's rows

    def encode(self, bits, dtype, shape, entropy) -> Encoded | None:
        rows = shape[0] if len(shape) >= 2 and shape[0] > 0 else None
        if dtype not in FLOAT_DTYPES or rows is None or bits.size == 0:
            return None
        matrix = bits.reshape(rows, -1)
        first = matrix[:, 0]
        is_second = matrix != first[:, None]
        second = np.where(is_second.any(axis=1), matrix[np.arange(rows), is_second.argmax(axis=1)], first)
        if not np.all(~is_second | (matrix == second[:, None])):
            return None
        row_values = np.stack([first, second], axis=1)  # (rows, 2)
        return Encoded(["binary"], {"binary": {"rows": rows}}, [
            Stream("row_values", row_values.tobytes()),
            symbol_stream("bits", is_second.reshape(-1).astype(np.uint16), 2, entropy),
        ])

    def check(self, params, dtype, shape, count) -> None:
        if len(shape) < 2:
            raise NetshrinkFormatError("binary encoding needs a tensor of at least 2 dimensions")
        param_int(params, "binary", "rows", shape[0], shape[0])

    def raw_bytes(self, role, params, dtype, count) -> int:
        return 2 * params["binary"]["rows"] * itemsize(dtype)

    def symbol_streams(self, params, count) -> dict[str, tuple[int, int]]:
        return {"bits": (count, 2)}

    def decode(self, params, streams, dtype, shape, count) -> np.ndarray:
        rows = params["binary"]["rows"]
        pairs = bits_from_bytes(streams["row_values"].data, dtype).reshape(rows, 2)
        which = decode_symbol_stream(streams["bits"], count, 2).reshape(rows, -1)
        return np.take_along_axis(pairs, which.astype(np.intp), axis=1).reshape(-1)
