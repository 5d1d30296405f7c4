"""``group_int``: k-bit integers on one affine grid per group of consecutive weights of a row,
``values == scale_g * (q - zero_point_g)`` bit for bit, ``q`` packed or entropy-coded.

A row is ``weight.flatten(1)``'s row (an output channel, an embedding row); a group is the whole
row (per-channel grids: Krishnamoorthi 2018, "Quantizing deep convolutional networks for efficient
inference", section 2.2) or ``group`` consecutive weights of it (GPTQ's grouping, Frantar et al.
2022, section 4). Streams: ``q`` (``2**bits`` alphabet), ``zero_points`` (one per group, same
alphabet) and ``scales`` (raw, one per group: float16 when every scale is one, else the tensor's
dtype), so an int8 per-channel fp32 tensor takes about a quarter of its bytes and a 4-bit one with
groups of 128 about an eighth. Zero is ``q == zero_point`` on every grid, so pruned weights stay
exact zeros, and the entropy coder sees them as one frequent symbol when the zero points agree.

The grids are found from the values alone (hand-written: no library detects them): per group, the
smallest gap between its values (or a value and zero) divided by 1, 2, 3, ... until every value is
an integer multiple of it; then the scale is pinned bit for bit among the nearest float16 and
own-dtype numbers of ``max |v| / max |n|``. Every group must be reproduced exactly, else the
encoding does not apply.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import torch

from netshrink.codec.encodings.base import (
    BYTES,
    DTYPES,
    FLOAT_DTYPES,
    SYMBOLS,
    Encoded,
    Encoding,
    Stream,
    bits_from_bytes,
    bits_to_tensor,
    decode_symbol_stream,
    itemsize,
    own_params,
    param_group,
    param_int,
    symbol_stream,
    tensor_bits,
)
from netshrink.codec.entropy import shannon_bits
from netshrink.core.errors import NetshrinkFormatError

MAX_INT_BITS = 16
#: the smallest group tried; groups are the row, then its divisors of at least this, largest first
MIN_GROUP = 8
#: per group, the smallest gap is divided by at most this many to find the grid's step
MAX_DIVISOR = 256
#: when most groups are still unsolved after this many divisors, the tensor is taken as not quantized
QUICK_DIVISORS = 16
#: elements analysed or decoded at once (bounds the temporaries); the first chunk is small so that
#: a tensor that is not on grids is refused after a few thousand values
CHUNK = 1 << 20
FIRST_CHUNK = 1 << 12
#: half-scales are used for float32 / float64 tensors (exact there); others keep their own dtype
HALF_SCALE_DTYPES = ("float32", "float64")
_NEIGHBOURS = 3


def _two_valued(bits: np.ndarray, rows: int) -> bool:
    """Whether every row holds at most two values: the ``binary`` encoding's tensors (one bit each,
    no wasted zero level), left to it."""
    matrix = bits.reshape(rows, -1)
    other = matrix != matrix[:, :1]
    second = matrix[np.arange(rows), other.argmax(axis=1)]
    return bool(np.all(~other | (matrix == second[:, None])))


def _groups_to_try(shape: list[int], count: int) -> list[int]:
    row = count // shape[0]
    return [row] + [d for d in range(row - 1, MIN_GROUP - 1, -1) if row % d == 0]


def _nudged(scale: torch.Tensor, steps: int) -> torch.Tensor:
    """``scale`` moved ``steps`` representable numbers up (or down) in its own dtype."""
    direction = torch.tensor(float("inf") if steps > 0 else float("-inf"), dtype=scale.dtype)
    for _ in range(abs(steps)):
        scale = torch.nextafter(scale, direction)
    return scale


def _pinned_scales(values: torch.Tensor, n: torch.Tensor, approx: torch.Tensor,
                   kind: torch.dtype) -> torch.Tensor:
    """Per group, a scale of dtype ``kind`` with ``n * scale == values`` bit for bit in the values'
    dtype, searched among the numbers nearest ``approx``; NaN where none is."""
    dtype = values.dtype
    want = values.view(torch.int16 if dtype.itemsize == 2 else torch.int32 if dtype.itemsize == 4 else torch.int64)
    steps = n.to(dtype)
    found = torch.full(approx.shape, float("nan"), dtype=kind)
    base = approx.to(kind)
    for offset in (0, *[s for k in range(1, _NEIGHBOURS + 1) for s in (k, -k)]):
        candidate = _nudged(base, offset) if offset else base
        exact = ((steps * candidate.to(dtype)[:, None]).view(want.dtype) == want).all(dim=1)
        found = torch.where(torch.isnan(found) & exact & torch.isfinite(candidate), candidate, found)
    return found


def _grid_chunk(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool] | None:
    """``(n, scales, half)`` for groups ``values`` ``(groups, group)``: integer steps and one scale
    per group with ``n * scale == values`` bit for bit (scales float16 when ``half``, else the
    values' dtype); None when a group is not on such a grid."""
    wide = values.double()
    far = wide.abs().amax(dim=1)
    ordered = wide.sort(dim=1).values
    gaps = torch.cat([ordered[:, 1:] - ordered[:, :-1], wide.abs()], dim=1)
    smallest = torch.where(gaps > 0, gaps, torch.full_like(gaps, float("inf"))).amin(dim=1)
    live = far > 0
    smallest = torch.where(live, smallest, torch.ones_like(smallest))
    tolerance_per_step = 2 * torch.finfo(values.dtype).eps
    n = torch.zeros(values.shape, dtype=torch.int32)
    steps = torch.ones_like(far)
    todo = live.clone()
    for divisor in range(1, MAX_DIVISOR + 1):
        if not bool(todo.any()):
            break
        rows = todo.nonzero().squeeze(1)
        far_steps = torch.round(far[rows] * divisor / smallest[rows])
        step = far[rows] / far_steps  # the far value has the best relative precision
        ratio = wide[rows] / step[:, None]
        rounded = torch.round(ratio)
        ok = ((ratio - rounded).abs() <= 1e-3 + tolerance_per_step * rounded.abs()).all(dim=1) \
            & (far_steps < 2 ** MAX_INT_BITS)
        if (divisor == 1 and not bool(ok.any())) or (
                divisor == QUICK_DIVISORS and float((~ok).sum()) > 0.5 * float(live.sum())):
            return None  # no group on its coarsest grid, or most on no coarse grid: not quantized
        done = rows[ok]
        n[done], steps[done] = rounded[ok].to(torch.int32), step[ok]
        todo[done] = False
    if bool(todo.any()):
        return None
    half = values.dtype in (torch.float32, torch.float64)
    scales = _pinned_scales(values, n, steps, torch.float16) if half else None
    if scales is None or bool(torch.isnan(scales[live]).any()):
        half, scales = False, _pinned_scales(values, n, steps, values.dtype)
        if bool(torch.isnan(scales[live]).any()):
            return None
    scales = torch.where(live, scales, torch.zeros_like(scales))
    return n, scales, half


def _grids(values: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(n, scales)`` of the whole flat tensor in groups of ``group``, chunk by chunk (the first one
    small); scales float16 when every group's is, else the values' dtype."""
    grouped = values.reshape(-1, group)
    first = max(1, FIRST_CHUNK // group)
    bounds = [0, min(first, grouped.shape[0])]
    while bounds[-1] < grouped.shape[0]:
        bounds.append(min(grouped.shape[0], bounds[-1] + max(1, CHUNK // group)))
    parts = []
    for start, stop in pairwise(bounds):
        found = _grid_chunk(grouped[start:stop])
        if found is None:
            return None
        parts.append(found)
    half = all(h for _, _, h in parts)
    if not half:  # a float16 scale is exact in the values' dtype
        parts = [(n, s.to(values.dtype), h) for n, s, h in parts]
    return torch.cat([n for n, _, _ in parts]), torch.cat([s for _, s, _ in parts])


def _symbols(n: torch.Tensor) -> tuple[np.ndarray, np.ndarray, int] | None:
    """``(q, zero_points, bits)``: the steps as non-negative symbols, with one zero point per group
    (each group's smallest fit) or one for all (zero then one symbol everywhere), whichever codes
    smaller by the empirical entropy or packed width; None beyond ``MAX_INT_BITS``."""
    low = torch.clamp(-n.amin(dim=1), min=0)
    options = []
    for zero_points in (low, torch.full_like(low, int(low.max()))):
        q = n + zero_points[:, None]
        bits = max(1, int(q.max()).bit_length())
        if bits > MAX_INT_BITS:
            continue
        q_np, zero_np = q.reshape(-1).numpy().astype(np.uint16), zero_points.numpy().astype(np.uint16)
        cost = sum(min(bits * s.size, shannon_bits(s, 2 ** bits)) for s in (q_np, zero_np))
        options.append((cost, q_np, zero_np, bits))
    if not options:
        return None
    _, q_np, zero_np, bits = min(options, key=lambda option: option[0])
    return q_np, zero_np, bits


class GroupInt(Encoding):
    name = "group_int"
    roles = {"q": SYMBOLS, "zero_points": SYMBOLS, "scales": BYTES}
    values = False  # needs the tensor's rows

    def encode(self, bits, dtype, shape, entropy) -> Encoded | None:
        if dtype not in FLOAT_DTYPES or len(shape) < 2 or bits.size == 0 or _two_valued(bits, shape[0]):
            return None
        values = bits_to_tensor(bits, dtype, [bits.size])
        if not bool(torch.isfinite(values).all()):
            return None
        best = None
        for group in _groups_to_try(shape, bits.size):
            found = _grids(values, group)
            symbols = None if found is None else _symbols(found[0])
            if symbols is None:
                continue
            q, zero_points, qbits = symbols
            scales = found[1]
            params = {"bits": qbits, "group": group, "scales": "float16" if scales.dtype == torch.float16 else dtype}
            encoded = Encoded(["group_int"], {"group_int": params}, [
                symbol_stream("q", q, 2 ** qbits, entropy),
                symbol_stream("zero_points", zero_points, 2 ** qbits, entropy),
                Stream("scales", tensor_bits(scales).tobytes())])
            if best is None or encoded.cost() < best.cost():
                best = encoded
            if qbits <= 8:  # a smaller group could only add scales
                break
        return best

    def check(self, params, dtype, shape, count) -> None:
        if len(shape) < 2 or count == 0:
            raise NetshrinkFormatError("group_int encoding needs a non-empty tensor of at least 2 dimensions")
        param_int(params, "group_int", "bits", 1, MAX_INT_BITS)
        param_group(params, "group_int", shape, count)
        scales = own_params(params, "group_int").get("scales")
        allowed = {dtype, *(("float16",) if dtype in HALF_SCALE_DTYPES else ())}
        if scales not in allowed:
            raise NetshrinkFormatError(f"group_int scales must be one of {sorted(allowed)}, got {str(scales)[:20]!r}")

    def raw_bytes(self, role, params, dtype, count) -> int:
        info = params["group_int"]
        return count // info["group"] * itemsize(info["scales"])

    def symbol_streams(self, params, count) -> dict[str, tuple[int, int]]:
        info = params["group_int"]
        return {"q": (count, 2 ** info["bits"]), "zero_points": (count // info["group"], 2 ** info["bits"])}

    def decode(self, params, streams, dtype, shape, count) -> np.ndarray:
        info = params["group_int"]
        group, alphabet = info["group"], 2 ** info["bits"]
        q = decode_symbol_stream(streams["q"], count, alphabet).reshape(-1, group)
        zero_points = decode_symbol_stream(streams["zero_points"], count // group, alphabet).astype(np.int32)
        scales = bits_to_tensor(bits_from_bytes(streams["scales"].data, info["scales"]), info["scales"],
                                [count // group]).to(DTYPES[dtype])
        out = np.empty(count, dtype=tensor_bits(torch.empty(0, dtype=DTYPES[dtype])).dtype).reshape(-1, group)
        rows = max(1, CHUNK // group)
        for start in range(0, q.shape[0], rows):
            stop = start + rows
            steps = torch.from_numpy(q[start:stop].astype(np.int32) - zero_points[start:stop, None])
            out[start:stop] = tensor_bits(steps.to(DTYPES[dtype]) * scales[start:stop, None]).reshape(-1, group)
        return out.reshape(-1)

    def work_bytes(self, params, dtype, count) -> int:
        """The base bound plus the scales widened and one chunk's integer and float temporaries."""
        groups = count // params["group_int"]["group"]
        return super().work_bytes(params, dtype, count) + groups * (4 + 8) + min(count, CHUNK) * (4 + 2 * 8)
