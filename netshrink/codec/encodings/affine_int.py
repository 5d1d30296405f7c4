"""``int``: k-bit integers on an affine grid, ``values == scale * (q - zero_point)`` bit for bit
(uniform quantization; Jacob et al. 2018, section 2.1), ``q`` entropy-coded."""

from __future__ import annotations

import math

import numpy as np
import torch

from netshrink.codec.encodings.base import (
    BITS_NUMPY,
    DTYPES,
    FLOAT_DTYPES,
    SYMBOLS,
    Encoded,
    Encoding,
    bits_to_tensor,
    decode_symbol_stream,
    itemsize,
    param_int,
    symbol_stream,
    tensor_bits,
)

MAX_INT_BITS = 16


def affine_decode(q: np.ndarray, zero_point: int, scale: torch.Tensor) -> torch.Tensor:
    """``scale * (q - zero_point)`` in the tensor's own dtype (integers exact, one rounding)."""
    steps = torch.from_numpy(q.astype(np.int64) - zero_point).to(scale.dtype)
    return steps * scale


class AffineInt(Encoding):
    name = "int"
    roles = {"q": SYMBOLS}

    def encode(self, bits, dtype, shape, entropy) -> Encoded | None:
        """Find ``scale, zero_point`` with ``values == scale * (q - zero_point)`` bit for bit."""
        if dtype not in FLOAT_DTYPES or bits.size == 0:
            return None
        values = bits_to_tensor(bits, dtype, [bits.size])
        if not bool(torch.isfinite(values).all()):
            return None
        unique = torch.from_numpy(np.unique(values.double().numpy()))  # numpy's sort: several times torch's here
        if unique.numel() < 2:
            return None
        step = float((unique[1:] - unique[:-1]).min())
        steps = torch.round(unique / step)
        if float(steps.abs().max()) >= 2 ** MAX_INT_BITS:
            return None
        far = int(steps.abs().argmax())
        guess = torch.tensor(float(unique[far] / steps[far]), dtype=torch.float64).to(DTYPES[dtype])
        candidates = [guess]
        for direction in (math.inf, -math.inf):
            scale = guess
            for _ in range(3):
                scale = torch.nextafter(scale, torch.tensor(direction, dtype=scale.dtype))
                candidates.append(scale)
        n = torch.round(values.double() / step).to(torch.int64).numpy()
        zero_point = -int(n.min())
        q = n + zero_point
        qbits = max(1, int(q.max()).bit_length())
        if qbits > MAX_INT_BITS:
            return None
        for scale in candidates:
            if not bool(torch.isfinite(scale)) or float(scale) == 0.0:
                continue
            if np.array_equal(tensor_bits(affine_decode(q, zero_point, scale)), bits):
                params = {"bits": qbits, "zero_point": zero_point,
                          "scale": int(tensor_bits(scale.reshape(1))[0])}
                return Encoded(["int"], {"int": params}, [
                    symbol_stream("q", q.astype(np.uint16), 2 ** qbits, entropy)])
        return None

    def check(self, params, dtype, shape, count) -> None:
        bits_range = 2 ** (8 * itemsize(dtype) - 1)
        param_int(params, "int", "bits", 1, MAX_INT_BITS)
        param_int(params, "int", "zero_point", -(2 ** (MAX_INT_BITS + 1)), 2 ** (MAX_INT_BITS + 1))
        param_int(params, "int", "scale", -bits_range, bits_range - 1)

    def symbol_streams(self, params, count) -> dict[str, tuple[int, int]]:
        return {"q": (count, 2 ** params["int"]["bits"])}

    def decode(self, params, streams, dtype, shape, count) -> np.ndarray:
        info = params["int"]
        q = decode_symbol_stream(streams["q"], count, 2 ** info["bits"])
        scale = bits_to_tensor(np.array([info["scale"]]).astype(BITS_NUMPY[itemsize(dtype)]), dtype, [])
        return tensor_bits(affine_decode(q, info["zero_point"], scale))
