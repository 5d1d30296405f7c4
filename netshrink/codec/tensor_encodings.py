"""Detect what a tensor holds and store it in the cheapest encoding that reproduces it exactly.

The encodings are those of Deep Compression (Han et al. 2016): pruning leaves a sparse tensor
stored with a relative index (section 2), weight sharing leaves a codebook plus per-weight indices
(section 3), and every integer stream then goes through an entropy coder (section 4, Huffman; here
also ANS). Added to those: k-bit integers on an affine grid (uniform quantization), per row or per
group (``group_int``), GGUF Q4_1-style blocks with a float minimum (``group_fmin``), binary rows
holding two values (BinaryConnect / XNOR-Net scaled signs), and lossless byte-plane coding of
dense floats (ZipNN / DFloat11). Each is one unit in ``netshrink.codec.encodings``; this module
drives them: it encodes with every unit and keeps the cheapest exact result, and it checks,
sizes and decodes a chain through its units.

Each candidate is encoded, then decoded and compared bit for bit before it may be chosen, so a
chosen encoding is exact by construction. An encoding is a *chain*: ``[coder]`` or
``[wrapper, coder]`` (``["sparse", "codebook"]``), where the wrapper stores positions and the
coder the stored values. ``Encoded.describe`` is what the .nsk file records of an encoding, and
``Encoded.cost`` counts those bytes with the payload, so the cheapest encoding is the cheapest in
the file.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from netshrink.codec import encodings
from netshrink.codec.encodings import chain_roles, chains, encoding, parse_chain
from netshrink.codec.encodings.base import (
    DTYPES,
    FLOAT_DTYPES,
    Encoded,
    Encoding,
    Stream,
    bits_to_tensor,
    dtype_name,
    itemsize,
    json_bytes,
    tensor_bits,
)
from netshrink.codec.encodings.sparse import PREFIX
from netshrink.codec.threads import one_torch_thread
from netshrink.core.errors import NetshrinkFormatError

__all__ = ["DTYPES", "EFFORTS", "FLOAT_DTYPES", "Encoded", "Stream", "bits_to_tensor", "chain_roles", "chains",
           "check_params", "decode_streams", "dtype_name", "encode_tensor", "itemsize", "json_bytes",
           "parse_chain", "raw_stream_bytes", "sparse_kept_and_crc", "symbol_streams", "tensor_bits",
           "work_bytes"]


def _units(chain: tuple[str, ...] | list[str]) -> tuple[Encoding, Encoding | None]:
    head = encoding(chain[0])
    return head, (encoding(chain[1]) if head.wraps else None)


def _value_count(head: Encoding, params: dict[str, Any]) -> int:
    return head.entries(params)


# --- encoding ------------------------------------------------------------------------------------

#: ``"default"``: a tensor of more than ``SAMPLE_ELEMENTS`` is encoded as its sample says, a
#: compressed encoding kept only where it saves at least ``MIN_SAVING`` of the raw bytes, a whole
#: tensor in float planes only for floats of at most ``PLANES_MAX_ITEMSIZE`` bytes, its long symbol streams coded
#: for fast decoding (``entropy.FAST_SLACK``);
#: ``"max"``: every encoding tried on the whole tensor, the cheapest kept
EFFORTS = ("default", "max")
SAMPLE_ELEMENTS = 1 << 16
#: a quarter: more than a dense fp32 tensor's exponent plane gives (about 16%, decoded at tens of
#: megabytes a second against the gigabytes a second of reading raw bytes), less than what bf16
#: and fp16 planes (about 30%) and every pruned, shared, quantized or binary tensor give
MIN_SAVING = 0.25
#: float planes are entropy coded, so they decode at tens of megabytes a second whatever they save:
#: a wider float (fp32, fp64) is stored raw at the default effort even where its planes would save
#: more than ``MIN_SAVING`` (SmolLM2-135M's fp32 weights, dequantized from 4-bit GGUF, save 39% and
#: took 45x safetensors' time to load, ``benchmarks/io.py``); bf16 and fp16 keep their planes (the
#: ratio the default effort keeps, issue 21); ``effort="max"`` codes every width. The kept values of
#: a sparse tensor still take planes at any width: a fraction of the values, decoded beside its index
PLANES_MAX_ITEMSIZE = 2
#: what the default effort never tries on a whole wide float (fp32, fp64): float planes (above),
#: float-minimum group grids (``group_fmin``: GGUF Q4_1-style weights), whose entropy-coded codes
#: decode at about 5.5 M values a second: SmolLM2-135M dequantized from GGUF saved 0.88x the GGUF
#: file that way but took about 100x safetensors' time to save and 48x to load (measured, 2026-12-03);
#: and integer grids per group (``group_int``), whose search took SmolLM2 60x safetensors' save time
#: and 14x its load time (``benchmarks/io.py``, 2026-12-03). A tensor netshrink itself put on such
#: grids is still stored as integers: its technique says so (``Technique.stored_as``, tried first by
#: ``save`` at the default effort). ``effort="max"`` tries them all; the default stores any other wide
#: float raw, at safetensors' pace.
DEFAULT_REFUSED_WIDE = ("float_bytes", "group_fmin", "group_int")


def encode_tensor(tensor: torch.Tensor, entropy: str = "auto", prefer: str | None = None,
                  effort: str = "max") -> Encoded:
    """The cheapest exact encoding of ``tensor`` (``effort="max"``), or the one its sample points to
    (``effort="default"``, see ``EFFORTS``), or the one ``prefer`` names if it is exact.

    ``prefer`` is a chain name such as ``"codebook"``, ``"int"``, ``"binary"``, ``"sparse"`` or
    ``"sparse+codebook"``; if that encoding cannot represent the tensor exactly (or is unknown),
    detection decides.
    """
    dtype = dtype_name(tensor.dtype)
    shape = list(tensor.shape)
    bits = tensor_bits(tensor)
    if dtype not in FLOAT_DTYPES:
        return encoding("dense").encode(bits, dtype, shape, entropy)  # integer buffers are stored as they are
    if prefer is not None:
        chosen = _encode_named(bits, dtype, shape, entropy, prefer)
        if chosen is not None and _exact(chosen, bits, dtype, shape):
            return chosen
    if effort == "default" and bits.size > SAMPLE_ELEMENTS:
        return _encode_as_sampled(bits, dtype, shape, "fast" if entropy == "auto" else entropy)
    if bits.size <= SAMPLE_ELEMENTS:
        with one_torch_thread():
            return _cheapest_exact(bits, dtype, shape, entropy)
    return _cheapest_exact(bits, dtype, shape, entropy)


def _cheapest_exact(bits: np.ndarray, dtype: str, shape: list[int], entropy: str,
                    refused: tuple[str, ...] = ()) -> Encoded:
    """The cheapest exact encoding; the ``refused`` units (never ``dense``) are not tried on the
    whole tensor, only as the values of a wrapper."""
    values = [e for e in encodings.ENCODINGS if e.values]
    candidates = [e.encode_with(bits, dtype, entropy, values) if e.wraps else e.encode(bits, dtype, shape, entropy)
                  for e in encodings.ENCODINGS if e.name not in refused]
    for candidate in sorted((c for c in candidates if c is not None), key=Encoded.cost):
        if _exact(candidate, bits, dtype, shape):
            return candidate
    raise AssertionError("dense encoding is always exact")  # unreachable: dense round-trips


def _sample(bits: np.ndarray, shape: list[int]) -> tuple[np.ndarray, list[int]]:
    """About ``SAMPLE_ELEMENTS`` of the tensor: whole rows evenly spaced (a binary tensor's rows
    keep their two values), else evenly spaced runs of the flat tensor."""
    if len(shape) >= 2 and shape[0] > 1 and bits.size // shape[0] <= SAMPLE_ELEMENTS // 4:
        row = bits.size // shape[0]
        rows = np.linspace(0, shape[0] - 1, min(shape[0], SAMPLE_ELEMENTS // row)).astype(np.int64)
        return bits.reshape(shape[0], row)[rows].reshape(-1), [rows.size, *shape[1:]]
    run = 256
    starts = np.linspace(0, bits.size - run, SAMPLE_ELEMENTS // run).astype(np.int64)
    picked = bits[(starts[:, None] + np.arange(run)).reshape(-1)]
    return picked, [picked.size]


def _encode_as_sampled(bits: np.ndarray, dtype: str, shape: list[int], entropy: str) -> Encoded:
    """The whole tensor in the encoding that is cheapest on its sample, when that saves at least
    ``MIN_SAVING`` of the raw bytes there and holds the whole tensor exactly; else dense. A whole
    tensor in float planes only for floats of at most ``PLANES_MAX_ITEMSIZE`` bytes."""
    dense = encoding("dense")
    sample, sample_shape = _sample(bits, shape)
    refused = () if itemsize(dtype) <= PLANES_MAX_ITEMSIZE else DEFAULT_REFUSED_WIDE
    with one_torch_thread():
        best = _cheapest_exact(sample, dtype, sample_shape, entropy, refused)
    if best.chain != ["dense"] and best.cost() <= (1 - MIN_SAVING) * sample.nbytes:
        chosen = _encode_named(bits, dtype, shape, entropy, "+".join(best.chain))
        if chosen is not None and _exact(chosen, bits, dtype, shape):
            return chosen
    return dense.encode(bits, dtype, shape, entropy)


def _encode_named(bits: np.ndarray, dtype: str, shape: list[int], entropy: str, name: str) -> Encoded | None:
    try:
        chain = parse_chain(name, partial=True)
    except NetshrinkFormatError:
        return None
    head = encoding(chain[0])
    if head.wraps:
        inner = [encoding(chain[1])] if len(chain) == 2 else [e for e in encodings.ENCODINGS if e.values]
        return head.encode_with(bits, dtype, entropy, inner, min_zeros=0.0)
    return head.encode(bits, dtype, shape, entropy)


def _exact(encoded: Encoded, bits: np.ndarray, dtype: str, shape: list[int]) -> bool:
    streams = {s.role: s for s in encoded.streams}
    decoded = decode_streams(encoded.chain, encoded.params, streams, dtype, shape)
    return np.array_equal(tensor_bits(decoded), bits)


# --- what a chain declares -----------------------------------------------------------------------

def check_params(chain: tuple[str, ...] | list[str], params: dict[str, Any], dtype: str, shape: list[int]) -> None:
    """Check every unit's parameters of a tensor from a file (format errors)."""
    head, inner = _units(chain)
    numel = math.prod(shape)
    head.check(params, dtype, shape, numel)
    if inner is not None:
        entries = _value_count(head, params)
        inner.check(params, dtype, [entries], entries)


def raw_stream_bytes(chain: tuple[str, ...] | list[str], role: str, params: dict[str, Any], dtype: str,
                     shape: list[int]) -> int:
    """The one length a raw byte stream of the chain can have (params already checked)."""
    head, inner = _units(chain)
    if inner is not None and role.startswith(PREFIX):
        return inner.raw_bytes(role.removeprefix(PREFIX), params, dtype, _value_count(head, params))
    return head.raw_bytes(role, params, dtype, math.prod(shape))


def symbol_streams(chain: tuple[str, ...] | list[str], params: dict[str, Any],
                   shape: list[int]) -> dict[str, tuple[int, int]]:
    """Each coded symbol stream's ``(symbol count, alphabet size)`` (params already checked)."""
    head, inner = _units(chain)
    streams = head.symbol_streams(params, math.prod(shape))
    if inner is not None:
        inner_streams = inner.symbol_streams(params, _value_count(head, params))
        streams.update({PREFIX + role: info for role, info in inner_streams.items()})
    return streams


def work_bytes(chain: tuple[str, ...] | list[str], params: dict[str, Any], dtype: str, shape: list[int]) -> int:
    """Most bytes decoding the tensor allocates at once, output and intermediates together."""
    head, inner = _units(chain)
    if inner is not None:
        return head.work_bytes_with(params, dtype, math.prod(shape), inner)
    return head.work_bytes(params, dtype, math.prod(shape))


# --- decoding ------------------------------------------------------------------------------------

def decode_streams(chain: list[str], params: dict[str, Any], streams: dict[str, Stream],
                   dtype: str, shape: list[int]) -> torch.Tensor:
    """Rebuild a tensor from its chain, parameters and streams (already validated)."""
    head, inner = _units(chain)
    numel = math.prod(shape)
    if inner is not None:
        bits = head.decode_with(params, streams, dtype, numel, inner)
    else:
        bits = head.decode(params, streams, dtype, shape, numel)
    if bits.size != numel:
        raise NetshrinkFormatError(f"decoded {bits.size} elements, expected {numel}")
    # a freshly decoded array becomes the tensor as it is; read-only stream bytes are copied
    return bits_to_tensor(bits, dtype, shape, copy=not bits.flags.writeable)


def sparse_kept_and_crc(chain: list[str], params: dict[str, Any], streams: dict[str, Stream],
                        dtype: str, numel: int) -> tuple[int, int]:
    """Nonzero count and CRC-32 of a wrapped (sparse) tensor without expanding it."""
    head, inner = _units(chain)
    return head.kept_and_crc(params, streams, dtype, numel, inner)
