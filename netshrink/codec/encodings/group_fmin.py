"""``group_fmin``: k-bit unsigned integers with one float16 scale and one float16 *minimum* per group
of consecutive weights of a row, ``values == float32(d * q) + m`` bit for bit, in float32.

This is the "scale and float minimum" block of GGML / GGUF's ``Q4_1`` (blocks of 32 weights, fp16
``d`` and ``m``, ``q`` in 0..15; ggml ``quantize_row_q4_1``), as ``gguf-py`` dequantizes it
(``gguf.quants.Q4_1.dequantize_blocks``: ``(d * qs) + m`` on float32 arrays, one rounding per
operation) and ``transformers`` loads a GGUF checkpoint (``from_pretrained(..., gguf_file=)``).
So a model dequantized from such a file is stored here in its quantized size, exactly. Unlike
``group_int``, the minimum need not be a multiple of the scale, so zero need not be on the grid.

Streams, each entropy-coded: ``q`` (``2**bits`` alphabet), then the scales' and the minimums' float16
bit patterns (one per group) as high and low byte planes. float32 tensors only: the formula is float32's.

Finding the grids is hand-written (no library detects them): per group, ``m`` is the smallest
value (the quantizer maps it to ``q == 0``) and must be a float16 number; ``d`` is searched among
the float16 numbers nearest ``(max - m) / (2**b - 1)`` for b = 1, 2, ... up to ``MAX_BITS``; a group
whose values are all equal takes ``d == 0``. Every group must be reproduced bit for bit, else the
encoding does not apply.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import torch

from netshrink.codec.encodings.base import (
    SYMBOLS,
    Encoded,
    Encoding,
    Stream,
    bits_to_tensor,
    decode_symbol_stream,
    param_group,
    param_int,
    symbol_stream,
    tensor_bits,
)
from netshrink.core.errors import NetshrinkFormatError

MAX_BITS = 8
#: the group sizes tried, most common first (GGUF's blocks are 32 weights)
GROUPS = (32, 64, 128, 16)
#: float16 numbers tried on either side of the estimated scale
_NEIGHBOURS = 2
#: groups analysed or decoded at once (bounds the temporaries); the first chunk is small so that a
#: tensor that is not on such grids is refused after a few thousand values
CHUNK = 1 << 20
#: scales and minimums are float16, each coded as two byte planes: SmolLM2's Q4_1 scales take about
#: 9.5 bits and its minimums about 8 this way, where raw takes 16 (a 65536-symbol alphabet would
#: cost its coder's table more than it saves on tens of thousands of groups)
HALVES = ("scales", "minimums")
PLANES = ("high", "low")
PLANE_ALPHABET = 256
FIRST_CHUNK = 1 << 12


def _plane_streams(part: str, values: torch.Tensor, entropy: str) -> list[Stream]:
    """float16 numbers as two coded byte planes: the high bytes (sign, exponent, two mantissa bits:
    a few bits of entropy across a tensor) and the low bytes."""
    patterns = tensor_bits(values).view(np.uint16)
    return [symbol_stream(f"{part}_high", patterns >> 8, PLANE_ALPHABET, entropy),
            symbol_stream(f"{part}_low", patterns & 0xFF, PLANE_ALPHABET, entropy)]


def _from_planes(part: str, streams: dict[str, Stream], count: int) -> torch.Tensor:
    high, low = (decode_symbol_stream(streams[f"{part}_{plane}"], count, PLANE_ALPHABET).astype(np.uint16)
                 for plane in PLANES)
    return bits_to_tensor(((high << 8) | low).view(np.int16), "float16", [count])


def dequantize(q: torch.Tensor, scales: torch.Tensor, minimums: torch.Tensor) -> torch.Tensor:
    """``(d * q) + m`` in float32 for ``q`` ``(groups, group)`` and float16 ``d``, ``m`` per group,
    as ``gguf-py`` computes it (two separately rounded float32 operations)."""
    return q.to(torch.float32) * scales.to(torch.float32)[:, None] + minimums.to(torch.float32)[:, None]


def _fp16_neighbour(value: torch.Tensor, offset: int) -> torch.Tensor:
    """The float16 number nearest ``value`` (offset 0), then the ones above and below it in turn
    (offsets 1, 2: one up, one down; 3, 4: two up, two down...)."""
    found = value.to(torch.float16)
    direction = torch.tensor(float("inf") if offset % 2 else float("-inf"), dtype=torch.float16)
    for _ in range((offset + 1) // 2):
        found = torch.nextafter(found, direction)
    return found


def _grid_chunk(values: torch.Tensor, hint: int | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int] | None:
    """``(q, scales, minimums, bits)`` of groups ``values`` ``(groups, group)`` float32, or None when
    a group is on no such grid; the widths are tried from ``hint`` (the previous chunk's) on."""
    minimums = values.amin(dim=1)
    half_minimums = minimums.to(torch.float16)
    if not torch.equal(half_minimums.to(torch.float32), minimums):
        return None
    span = values.amax(dim=1).double() - minimums.double()
    q = torch.zeros(values.shape, dtype=torch.int32)
    scales = torch.zeros(values.shape[0], dtype=torch.float16)
    todo = span > 0
    flat = ~todo
    if bool(flat.any()):  # all equal: d == 0, q == 0 (unless -0.0, which 0 + m cannot give)
        exact = (dequantize(q[flat], scales[flat], half_minimums[flat]).view(torch.int32)
                 == values[flat].view(torch.int32)).all(dim=1)
        if not bool(exact.all()):
            return None
    bits_used = 1
    order = [hint] if hint else []
    for bits in [*order, *(b for b in range(1, MAX_BITS + 1) if b != hint)]:
        top = 2 ** bits - 1
        for offset in range(2 * _NEIGHBOURS + 1):
            rows = todo.nonzero().squeeze(1)
            if rows.numel() == 0:
                break
            candidate = _fp16_neighbour(span[rows] / top, offset)
            trial = torch.round((values[rows].double() - minimums[rows, None].double())
                                / candidate.double()[:, None]).clamp(0, top).to(torch.int32)
            exact = (candidate > 0) & (dequantize(trial, candidate, half_minimums[rows]).view(torch.int32)
                                       == values[rows].view(torch.int32)).all(dim=1)
            done = rows[exact]
            if done.numel():
                q[done], scales[done] = trial[exact], candidate[exact]
                todo[done] = False
                bits_used = max(bits_used, bits)
        if not bool(todo.any()):
            break
    if bool(todo.any()):
        return None
    return q, scales, half_minimums, bits_used


def _grids(values: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int] | None:
    """The whole flat float32 tensor in groups of ``group``, chunk by chunk (the first one small)."""
    grouped = values.reshape(-1, group)
    bounds = [0, min(max(1, FIRST_CHUNK // group), grouped.shape[0])]
    while bounds[-1] < grouped.shape[0]:
        bounds.append(min(grouped.shape[0], bounds[-1] + max(1, CHUNK // group)))
    parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]] = []
    for start, stop in pairwise(bounds):
        found = _grid_chunk(grouped[start:stop], parts[-1][3] if parts else None)
        if found is None:
            return None
        parts.append(found)
    return (torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]), torch.cat([p[2] for p in parts]),
            max(p[3] for p in parts))


class GroupFloatMin(Encoding):
    name = "group_fmin"
    roles = {"q": SYMBOLS, **{f"{part}_{plane}": SYMBOLS for part in HALVES for plane in PLANES}}
    values = False  # needs the tensor's rows

    def encode(self, bits, dtype, shape, entropy) -> Encoded | None:
        if dtype != "float32" or len(shape) < 2 or bits.size == 0:
            return None
        values = bits_to_tensor(bits, dtype, [bits.size])
        if not bool(torch.isfinite(values).all()):
            return None
        row = bits.size // shape[0]
        for group in GROUPS:
            if row % group:
                continue
            found = _grids(values, group)
            if found is None:
                continue
            q, scales, minimums, qbits = found
            return Encoded(["group_fmin"], {"group_fmin": {"bits": qbits, "group": group}}, [
                symbol_stream("q", q.reshape(-1).numpy().astype(np.uint16), 2 ** qbits, entropy),
                *_plane_streams("scales", scales, entropy), *_plane_streams("minimums", minimums, entropy)])
        return None

    def check(self, params, dtype, shape, count) -> None:
        if dtype != "float32" or len(shape) < 2 or count == 0:
            raise NetshrinkFormatError("group_fmin encoding needs a non-empty float32 tensor of at least 2 dimensions")
        param_int(params, "group_fmin", "bits", 1, MAX_BITS)
        param_group(params, "group_fmin", shape, count)

    def symbol_streams(self, params, count) -> dict[str, tuple[int, int]]:
        info = params["group_fmin"]
        groups = count // info["group"]
        return {"q": (count, 2 ** info["bits"]),
                **{f"{part}_{plane}": (groups, PLANE_ALPHABET) for part in HALVES for plane in PLANES}}

    def decode(self, params, streams, dtype, shape, count) -> np.ndarray:
        info = params["group_fmin"]
        group = info["group"]
        q = decode_symbol_stream(streams["q"], count, 2 ** info["bits"]).reshape(-1, group)
        scales, minimums = (_from_planes(part, streams, count // group) for part in HALVES)
        out = torch.empty((count // group, group), dtype=torch.float32)
        rows = max(1, CHUNK // group)
        for start in range(0, q.shape[0], rows):
            stop = start + rows
            out[start:stop] = dequantize(torch.from_numpy(q[start:stop].astype(np.int32)), scales[start:stop],
                                         minimums[start:stop])
        return tensor_bits(out)

    def work_bytes(self, params, dtype, count) -> int:
        """The base bound (which counts the coded scales and minimums) plus one chunk's temporaries."""
        return super().work_bytes(params, dtype, count) + min(count, CHUNK) * (4 + 3 * 4)
