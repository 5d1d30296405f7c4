"""Detect what a tensor holds and store it in the cheapest encoding that reproduces it exactly.

The encodings are those of Deep Compression (Han et al. 2016): pruning leaves a sparse tensor
stored with a relative index (section 2), weight sharing leaves a codebook plus per-weight indices
(section 3), and every integer stream then goes through an entropy coder (section 4, Huffman; here
also ANS). Added to those: k-bit integers on an affine grid (uniform quantization), binary rows
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
from netshrink.core.errors import NetshrinkFormatError

__all__ = ["DTYPES", "FLOAT_DTYPES", "Encoded", "Stream", "bits_to_tensor", "chain_roles", "chains",
           "check_params", "decode_streams", "dtype_name", "encode_tensor", "itemsize", "json_bytes",
           "parse_chain", "raw_stream_bytes", "sparse_kept_and_crc", "symbol_streams", "tensor_bits",
           "work_bytes"]


def _units(chain: tuple[str, ...] | list[str]) -> tuple[Encoding, Encoding | None]:
    head = encoding(chain[0])
    return head, (encoding(chain[1]) if head.wraps else None)


def _value_count(head: Encoding, params: dict[str, Any]) -> int:
    return head.entries(params)


# --- encoding ------------------------------------------------------------------------------------

def encode_tensor(tensor: torch.Tensor, entropy: str = "auto", prefer: str | None = None) -> Encoded:
    """The cheapest exact encoding of ``tensor``, or the one ``prefer`` names if it is exact.

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
    values = [e for e in encodings.ENCODINGS if e.values]
    candidates = [e.encode_with(bits, dtype, entropy, values) if e.wraps else e.encode(bits, dtype, shape, entropy)
                  for e in encodings.ENCODINGS]
    for candidate in sorted((c for c in candidates if c is not None), key=Encoded.cost):
        if _exact(candidate, bits, dtype, shape):
            return candidate
    raise AssertionError("dense encoding is always exact")  # unreachable: dense round-trips


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
