"""``codebook``: weight sharing (Han et al. 2016, section 3): at most 256 distinct values stored
once, and one entropy-coded index per weight."""

from __future__ import annotations

import numpy as np

from netshrink.codec.encodings.base import (
    BYTES,
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

MAX_CODEBOOK = 256  # codebook of at most 2**8 values


class Codebook(Encoding):
    name = "codebook"
    roles = {"codebook": BYTES, "indices": SYMBOLS}

    def encode(self, bits, dtype, shape, entropy) -> Encoded | None:
        codebook, indices = np.unique(bits, return_inverse=True)
        if codebook.size > MAX_CODEBOOK or bits.size == 0:
            return None
        size = int(codebook.size)
        return Encoded(["codebook"], {"codebook": {"size": size}}, [
            Stream("codebook", codebook.tobytes()),
            symbol_stream("indices", indices.reshape(-1).astype(np.uint16), size, entropy),
        ])

    def check(self, params, dtype, shape, count) -> None:
        param_int(params, "codebook", "size", 1, MAX_CODEBOOK)

    def raw_bytes(self, role, params, dtype, count) -> int:
        return params["codebook"]["size"] * itemsize(dtype)

    def symbol_streams(self, params, count) -> dict[str, tuple[int, int]]:
        return {"indices": (count, params["codebook"]["size"])}

    def decode(self, params, streams, dtype, shape, count) -> np.ndarray:
        size = params["codebook"]["size"]
        indices = decode_symbol_stream(streams["indices"], count, size)
        return bits_from_bytes(streams["codebook"].data, dtype)[indices]
