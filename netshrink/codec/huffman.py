"""Canonical, length-limited Huffman coding with a block layout chosen for fast decoding.

Deep Compression (Han et al. 2016, section 4) Huffman-codes the quantized weights and the sparse
index gaps, whose distributions are far from uniform. Here the code is stored as its code lengths
only (canonical Huffman, as in DEFLATE, RFC 1951 section 3.2.2), limited to ``max_length`` bits by
the package-merge algorithm (Larmore and Hirschberg 1990).

Layout of the payload::

    block bit lengths   n_blocks values packed with pack_bits at params["offset_bits"] bits
    code stream         all code words, LSB first, blocks back to back, zero-padded to a byte

Block ``j`` holds symbols ``j*block_size .. (j+1)*block_size - 1``; its start bit is the sum of the
lengths of the blocks before it.

Two decoders, chosen by the layout alone, so that no layout costs more than a bounded number of
Python-level steps per payload byte (``decode_steps``):

- *sequential* (fewer than ``LOCKSTEP_MIN_LANES`` blocks): each block is decoded in C by
  ``bitarray.util.canonical_decode`` (a well-kept library's canonical Huffman decoder), one Python
  call per block, about 20-35 M symbols/s whatever the stream length;
- *lockstep* (many blocks): step ``t`` gathers a ``max_length``-bit window at every block's current
  bit position and decodes symbol ``t`` of every block with one table lookup, as whole-array numpy
  operations: ``block_size`` steps over ``n_blocks`` lanes, 60-90 M symbols/s on long streams
  (hand-written: no library decodes many Huffman blocks at once).

The encoder picks the layout from the stream length (``choose_block_size``): blocks only when a
stream is long enough for ``LOCKSTEP_MIN_LANES`` of them with a block table of at most
``1 / TABLE_SHARE`` of the payload, else one block.
"""

from __future__ import annotations

import heapq
from typing import Any

import numpy as np
import torch
from bitarray import bitarray
from bitarray.util import canonical_decode

from netshrink.codec.bitpack import (
    MAX_BITS,
    pack_bits,
    pack_variable_bits,
    packed_length,
    symbol_dtype,
    unpack_bits,
)
from netshrink.codec.checks import checked_int, checked_int_list, checked_stream_shape, checked_symbols
from netshrink.core.errors import NetshrinkFormatError

#: the lockstep decoder is used from this many blocks on; below it, one C call per block
LOCKSTEP_MIN_LANES = 512
#: the encoder keeps the block table under 1 / TABLE_SHARE of the payload (0.5%)
TABLE_SHARE = 200
MIN_BLOCK_SIZE = 64
#: code length limit when params leave ``max_length`` out
DEFAULT_MAX_LENGTH = 16
#: params["lengths"]: one character per symbol of the alphabet, its code length 0..MAX_BITS as a
#: base-17 digit; the JSON list of numbers files up to format version 5 hold (params["code_lengths"])
#: took about 3.5 bytes a symbol against 1 (issue 20: the table's bytes on short streams)
LENGTH_DIGITS = "0123456789abcdefg"
#: largest block (encoder and decoder): keeps a block's bit length within 32 bits
MAX_BLOCK_SIZE = 1 << 24


def huffman_code_lengths(counts: np.ndarray, max_length: int = 16) -> np.ndarray:
    """Optimal code lengths (at most ``max_length`` bits) for symbol ``counts``, by package-merge.

    Unused symbols (count 0) get length 0; a single used symbol gets length 1. Package-merge
    (Larmore and Hirschberg 1990) is run in its counting form: at each of the ``max_length``
    levels the merged list is a sorted array, and a leaf's code length is the number of levels
    whose selected prefix contains it, so no package ever records its members.
    """
    counts = np.asarray(counts, dtype=np.int64).reshape(-1)
    if counts.size and counts.min() < 0:
        raise ValueError("symbol counts must be non-negative")
    if not 1 <= max_length <= MAX_BITS:
        raise ValueError(f"max_length must be 1..{MAX_BITS}, got {max_length}")
    lengths = np.zeros(counts.size, dtype=np.uint8)
    used = np.flatnonzero(counts)
    if used.size <= 1:
        lengths[used] = 1
        return lengths
    if used.size > (1 << max_length):
        raise ValueError(f"{used.size} symbols cannot be coded with codes of at most {max_length} bits")
    order = used[np.argsort(counts[used], kind="stable")]
    leaves = counts[order]
    # levels[j] = is-leaf flags of the merged list at level j (level 0 holds only the leaves).
    levels = [np.ones(leaves.size, dtype=bool)]
    merged = leaves
    for _ in range(max_length - 1):
        packages = merged[0 : merged.size - 1 : 2] + merged[1 : merged.size : 2]
        weights = np.concatenate([leaves, packages])
        is_leaf = np.concatenate([np.ones(leaves.size, bool), np.zeros(packages.size, bool)])
        by_weight = np.argsort(weights, kind="stable")  # leaves first on ties
        merged, flags = weights[by_weight], is_leaf[by_weight]
        levels.append(flags)
    depth = np.zeros(leaves.size, dtype=np.int64)
    take = 2 * leaves.size - 2
    for flags in reversed(levels):
        leaves_taken = int(np.count_nonzero(flags[:take]))
        depth[:leaves_taken] += 1  # the selected leaves are always the lightest ones
        take = 2 * (take - leaves_taken)
    lengths[order] = depth
    return lengths


def optimal_huffman_bits(counts: np.ndarray) -> int:
    """Total bits of an optimal unlimited Huffman code for ``counts`` (sum of merge weights)."""
    heap = [int(c) for c in np.asarray(counts).reshape(-1) if c > 0]
    if len(heap) == 1:
        return heap[0]  # one symbol: one bit each, as huffman_code_lengths assigns
    heapq.heapify(heap)
    total = 0
    while len(heap) > 1:
        merged = heapq.heappop(heap) + heapq.heappop(heap)
        total += merged
        heapq.heappush(heap, merged)
    return total


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical code words for ``lengths`` (RFC 1951 section 3.2.2), bit-reversed for LSB-first.

    Symbols are ranked by (length, symbol); each code is the previous one plus one, shifted left
    when the length grows. The returned words are bit-reversed so that the first code bit is the
    least significant bit, matching the little-endian stream of :mod:`netshrink.codec.bitpack`.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    codes = np.zeros(lengths.size, dtype=np.int64)
    used = np.flatnonzero(lengths)
    if used.size == 0:
        return codes.astype(np.uint16)
    ranked = used[np.lexsort((used, lengths[used]))]
    ranked_lengths = lengths[ranked]
    # code[i] = (code[i-1] + 1) << (len[i] - len[i-1]), as a closed form over the sorted ranks:
    # code[i] = sum over earlier symbols k of 2**(len[i] - len[k]).
    max_len = int(ranked_lengths.max())
    weight = np.int64(1) << (max_len - ranked_lengths)  # 2**(L - len): each code's share of 2**L
    start = np.concatenate([[0], np.cumsum(weight)[:-1]])
    msb_first = start >> (max_len - ranked_lengths)
    bit_positions = np.arange(MAX_BITS, dtype=np.int64)
    bits = (msb_first[:, None] >> bit_positions[None, :]) & 1  # bit k of the MSB-first code
    # Reverse the low len bits: bit k moves to position len - 1 - k.
    target = ranked_lengths[:, None] - 1 - bit_positions[None, :]
    valid = target >= 0
    reversed_codes = np.where(valid, bits << np.where(valid, target, 0), 0).sum(axis=1)
    codes[ranked] = reversed_codes
    return codes.astype(np.uint16)


def _offset_bits(block_size: int, max_length: int) -> int:
    """Bits needed for one block's length in bits (at most block_size * max_length)."""
    return max(1, int(block_size * max_length).bit_length())


def choose_block_size(count: int, total_bits: int, max_length: int = DEFAULT_MAX_LENGTH) -> int:
    """The block size for a stream of ``count`` symbols coded in ``total_bits`` bits.

    The smallest power of two from ``MIN_BLOCK_SIZE`` whose block table (``offset_bits`` per block)
    is at most ``1 / TABLE_SHARE`` of the payload; if that leaves fewer than ``LOCKSTEP_MIN_LANES``
    blocks, the whole stream is one block (decoded sequentially in C, no table to speak of).
    """
    block = MIN_BLOCK_SIZE
    while block < MAX_BLOCK_SIZE and _offset_bits(block, max_length) * TABLE_SHARE * count > block * total_bits:
        block *= 2
    if count >= LOCKSTEP_MIN_LANES * block:
        return block
    return max(1, min(count, MAX_BLOCK_SIZE))


def decode_steps(n_blocks: int, block_size: int) -> int:
    """Python-level steps ``huffman_decode`` takes for a layout: one per block (sequential) below
    ``LOCKSTEP_MIN_LANES`` blocks, else one per symbol of a block (lockstep over at least that many
    lanes). Either way at most ``LOCKSTEP_MIN_LANES + payload_bits / (LOCKSTEP_MIN_LANES - 1)``,
    since every symbol costs at least one bit."""
    return block_size if n_blocks >= LOCKSTEP_MIN_LANES else n_blocks


def huffman_encode(
    symbols: np.ndarray,
    alphabet_size: int,
    max_length: int = DEFAULT_MAX_LENGTH,
    block_size: int | None = None,
) -> tuple[bytes, dict[str, Any]]:
    """Huffman-code ``symbols`` (ints in ``0 .. alphabet_size-1``) in blocks of ``block_size``.

    Returns ``(payload, params)``: params holds ``lengths`` (one digit per symbol of the alphabet),
    and ``max_length`` and ``block_size`` where they differ from their defaults (16, and the whole
    stream as one block); the payload is laid out as in the module docstring, each block's bit
    length in ``_offset_bits(block_size, max_length)`` bits. ``block_size=None`` lets
    ``choose_block_size`` pick it from the stream.
    """
    symbols = checked_symbols(symbols, alphabet_size)
    if block_size is not None and not 1 <= block_size <= MAX_BLOCK_SIZE:
        raise ValueError(f"block_size must be 1..{MAX_BLOCK_SIZE}, got {block_size}")
    counts = np.bincount(symbols.astype(np.int64), minlength=alphabet_size)
    lengths = huffman_code_lengths(counts, max_length)
    codes = canonical_codes(lengths)
    symbol_lengths = lengths[symbols]
    if block_size is None:
        block_size = choose_block_size(symbols.size, int((counts * lengths).sum()), max_length)
    block_size = min(block_size, max(1, symbols.size))  # one block: the stream's length, left out of params
    stream = pack_variable_bits(codes[symbols], symbol_lengths)
    n_blocks = -(-symbols.size // block_size)
    block_bits = np.add.reduceat(symbol_lengths.astype(np.int64), np.arange(n_blocks) * block_size)
    offset_bits = _offset_bits(block_size, max_length)
    header = b""
    if n_blocks:
        header = pack_bits(block_bits, offset_bits) if offset_bits <= MAX_BITS else _pack_wide(block_bits, offset_bits)
    params: dict[str, Any] = {"lengths": lengths_text(lengths)}
    if max_length != DEFAULT_MAX_LENGTH:
        params["max_length"] = int(max_length)
    if block_size < symbols.size:
        params["block_size"] = int(block_size)
    return header + stream, params


def _pack_wide(values: np.ndarray, bits: int) -> bytes:
    """pack_bits for widths above 16: the low 16 bits and the high part as two packed runs."""
    return pack_bits(values & 0xFFFF, MAX_BITS) + pack_bits(values >> MAX_BITS, bits - MAX_BITS)


def _unpack_wide(data: bytes, bits: int, count: int) -> np.ndarray:
    low_bytes = packed_length(count, MAX_BITS)
    low = unpack_bits(data[:low_bytes], MAX_BITS, count).astype(np.int64)
    high = unpack_bits(data[low_bytes:], bits - MAX_BITS, count).astype(np.int64)
    return low | (high << MAX_BITS)


def _block_bits(header: bytes, offset_bits: int, n_blocks: int) -> np.ndarray:
    """The block table (int64), read with Python integers when it is short: a short stream's one
    or few entries cost less that way than through ``unpack_bits``."""
    if n_blocks >= 64:
        if offset_bits <= MAX_BITS:
            return unpack_bits(header, offset_bits, n_blocks).astype(np.int64)
        return _unpack_wide(header, offset_bits, n_blocks)
    low_bits = min(offset_bits, MAX_BITS)
    split = packed_length(n_blocks, low_bits)
    low, high = int.from_bytes(header[:split], "little"), int.from_bytes(header[split:], "little")
    high_bits = offset_bits - low_bits
    values = [((low >> (low_bits * i)) & ((1 << low_bits) - 1))
              | (((high >> (high_bits * i)) & ((1 << high_bits) - 1)) << MAX_BITS) for i in range(n_blocks)]
    return np.array(values, dtype=np.int64)


def _header_length(n_blocks: int, offset_bits: int) -> int:
    if offset_bits <= MAX_BITS:
        return packed_length(n_blocks, offset_bits)
    return packed_length(n_blocks, MAX_BITS) + packed_length(n_blocks, offset_bits - MAX_BITS)


def lengths_text(lengths: np.ndarray) -> str:
    """Code lengths as ``params["lengths"]``: one ``LENGTH_DIGITS`` character each."""
    return "".join(LENGTH_DIGITS[int(length)] for length in lengths)


_DIGIT_VALUES = np.full(256, -1, dtype=np.int64)
_DIGIT_VALUES[np.frombuffer(LENGTH_DIGITS.encode("ascii"), dtype=np.uint8)] = np.arange(len(LENGTH_DIGITS))


def _stored_lengths(params: dict, alphabet_size: int, max_length: int) -> np.ndarray:
    """The code lengths as params store them: ``lengths`` (a digit string, format version 6) or
    ``code_lengths`` (a list of integers, versions up to 5), exactly one of them."""
    if ("lengths" in params) == ("code_lengths" in params):
        raise NetshrinkFormatError("huffman params must hold exactly one of 'lengths' and 'code_lengths'")
    if "code_lengths" in params:
        return checked_int_list(params["code_lengths"], alphabet_size, 0, max_length, "huffman params['code_lengths']")
    text = params["lengths"]
    if not isinstance(text, str) or len(text) != alphabet_size or not text.isascii():
        raise NetshrinkFormatError(f"huffman params['lengths'] must be {alphabet_size} characters of "
                                   f"{LENGTH_DIGITS!r}")
    lengths = _DIGIT_VALUES[np.frombuffer(text.encode("ascii"), dtype=np.uint8)]
    if ((lengths < 0) | (lengths > max_length)).any():
        raise NetshrinkFormatError(f"huffman params['lengths'] must be code lengths 0..{max_length}, as the "
                                   f"characters {LENGTH_DIGITS[:max_length + 1]!r}")
    return lengths


def _checked_lengths(params: dict, alphabet_size: int, max_length: int) -> np.ndarray:
    """Code lengths from untrusted params: right count, in range, and satisfying Kraft."""
    lengths = _stored_lengths(params, alphabet_size, max_length)
    used = lengths[lengths > 0]
    # Kraft inequality in integers: sum 2**(L - len) <= 2**L.
    if int((np.int64(1) << (max_length - used)).sum()) > (1 << max_length):
        raise NetshrinkFormatError("huffman code lengths violate the Kraft inequality; the code is not prefix-free")
    return lengths


def _decode_table(lengths: np.ndarray, window_bits: int, alphabet_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Lookup tables indexed by the next ``window_bits`` stream bits (LSB = first bit).

    Windows that start with no valid code word map to symbol ``alphabet_size`` (out of range)
    and length 0, so a lane that meets one stops advancing and is caught by the end checks.
    """
    codes = canonical_codes(lengths).astype(np.int64)
    table_symbols = np.full(1 << window_bits, alphabet_size, dtype=np.uint32)
    table_lengths = np.zeros(1 << window_bits, dtype=np.int64)
    for length in np.unique(lengths[lengths > 0]):
        members = np.flatnonzero(lengths == length)
        # every window whose low `length` bits equal the code: code + k * 2**length
        suffixes = np.arange(1 << (window_bits - int(length)), dtype=np.int64) << int(length)
        windows = (codes[members][:, None] + suffixes[None, :]).reshape(-1)
        table_symbols[windows] = np.repeat(members, suffixes.size)
        table_lengths[windows] = length
    return table_symbols, table_lengths


def huffman_max_symbols(params: Any, nbytes: int) -> int:
    """Most symbols a Huffman payload of ``nbytes`` can honestly hold: each costs at least the
    shortest code length, at least one bit (a one-symbol code's word is one bit)."""
    raw = params.get("lengths", params.get("code_lengths")) if isinstance(params, dict) else None
    if isinstance(raw, str):
        raw = [LENGTH_DIGITS.index(c) for c in set(raw) if c in LENGTH_DIGITS]
    used = [x for x in raw if isinstance(x, int) and x > 0] if isinstance(raw, list) else []
    return 8 * nbytes // max(1, min(used, default=1))


def huffman_decode(payload: bytes, params: dict, count: int, alphabet_size: int) -> np.ndarray:
    """Decode ``count`` symbols written by :func:`huffman_encode`.

    Returns uint8 when ``alphabet_size <= 256``, else uint16. Everything read from ``params`` and
    ``payload`` is validated; a malformed input raises ``NetshrinkFormatError``. Work and memory
    are bounded by the payload: ``count`` is refused above ``huffman_max_symbols``, and the
    Python-level steps are bounded by ``decode_steps``.
    """
    if not isinstance(params, dict):
        raise NetshrinkFormatError("huffman params must be a JSON object")
    count, alphabet_size = checked_stream_shape(count, alphabet_size)
    max_length = checked_int(params.get("max_length", DEFAULT_MAX_LENGTH), 1, MAX_BITS,
                             "huffman params['max_length']")
    block_size = checked_int(params.get("block_size", max(1, min(count, MAX_BLOCK_SIZE))), 1, MAX_BLOCK_SIZE,
                             "huffman params['block_size']")
    offset_bits = _offset_bits(block_size, max_length)
    if "offset_bits" in params and params["offset_bits"] != offset_bits:  # written by netshrink <= 0.1
        raise NetshrinkFormatError("huffman params['offset_bits'] does not match block_size and max_length")
    lengths = _checked_lengths(params, alphabet_size, max_length)
    out_dtype = symbol_dtype(alphabet_size)
    if count == 0:
        if payload:
            raise NetshrinkFormatError(f"huffman payload of an empty stream must be empty, got {len(payload)} bytes")
        return np.zeros(0, dtype=out_dtype)
    if not lengths.any():
        raise NetshrinkFormatError("huffman code has no symbols but the stream is not empty")
    used_lengths = lengths[lengths > 0]
    if count > 8 * len(payload) // int(used_lengths.min()):  # huffman_max_symbols, on checked lengths
        raise NetshrinkFormatError(f"huffman payload of {len(payload)} bytes cannot hold {count} symbols")
    block_size = min(block_size, count)  # a declared block never exceeds the stream
    n_blocks = -(-count // block_size)
    header_bytes = _header_length(n_blocks, offset_bits)
    if len(payload) < header_bytes:
        raise NetshrinkFormatError(f"huffman payload of {len(payload)} bytes is shorter than its block table")
    block_bits = _block_bits(payload[:header_bytes], offset_bits, n_blocks)
    symbols_per_block = np.full(n_blocks, block_size, dtype=np.int64)
    symbols_per_block[-1] = count - (n_blocks - 1) * block_size
    if np.any(block_bits < symbols_per_block * used_lengths.min()) or np.any(
        block_bits > symbols_per_block * used_lengths.max()
    ):
        raise NetshrinkFormatError("huffman block length is impossible for its symbol count")
    ends = np.cumsum(block_bits)
    stream = payload[header_bytes:]
    if len(stream) != packed_length(int(ends[-1]), 1):
        raise NetshrinkFormatError(
            f"huffman stream has {len(stream)} bytes but its blocks declare {int(ends[-1])} bits"
        )
    if decode_steps(n_blocks, block_size) == n_blocks:
        flat = _decode_sequential(stream, ends, symbols_per_block, lengths, out_dtype)
    else:
        flat = _decode_lockstep(stream, ends, block_size, int(symbols_per_block[-1]), lengths, alphabet_size)
    return flat.astype(out_dtype, copy=False)


def _decode_sequential(stream: bytes, ends: np.ndarray, symbols_per_block: np.ndarray,
                       lengths: np.ndarray, out_dtype: np.dtype) -> np.ndarray:
    """Each block by ``bitarray``'s C canonical decoder; it must decode to exactly its symbols."""
    bits = bitarray(endian="little")
    bits.frombytes(stream)
    used = np.flatnonzero(lengths)
    ranked = used[np.lexsort((used, lengths[used]))].tolist()  # canonical order: (length, symbol)
    per_length = np.bincount(lengths[used], minlength=int(lengths.max()) + 1).tolist()
    out = np.empty(int(symbols_per_block.sum()), dtype=out_dtype)
    start, done = 0, 0
    for end, n in zip(ends.tolist(), symbols_per_block.tolist(), strict=True):
        try:
            decoder = canonical_decode(bits[start:end], per_length, ranked)
            out[done : done + n] = np.fromiter(decoder, dtype=out_dtype, count=n)
            extra = next(decoder, None)
        except ValueError as error:  # bitarray: a pattern that is no code word, or a cut-off one
            raise NetshrinkFormatError(f"huffman stream is corrupt: {error}") from None
        if extra is not None:
            raise NetshrinkFormatError("huffman stream is corrupt: a block does not decode to its declared length")
        start, done = end, done + n
    return out


def _decode_lockstep(stream: bytes, ends: np.ndarray, block_size: int, last_block_size: int,
                     lengths: np.ndarray, alphabet_size: int) -> np.ndarray:
    """All blocks at once, one symbol of every block per step (see the module docstring)."""
    n_blocks = ends.size
    window_bits = int(lengths.max())
    table_symbols, table_lengths = _decode_table(lengths, window_bits, alphabet_size)
    # window_at_byte[i] = stream bytes i, i+1, i+2 as one little-endian integer (>= 23 bits
    # cover any 16-bit window at any bit phase). Zero padding covers lanes that read past
    # their end on corrupt input: a lane moves at most window_bits per step.
    padding = packed_length(block_size * window_bits, 1) + 3
    raw = np.frombuffer(stream, dtype=np.uint8)
    # int32 lanes halve the memory traffic of the loop (about 1.9x faster) whenever every bit
    # position fits; huge streams keep int64
    lane_dtype = np.int32 if 8 * (raw.size + padding) < 2**31 else np.int64
    padded = np.concatenate([raw, np.zeros(padding, dtype=np.uint8)]).astype(lane_dtype)
    window_at_byte = padded[:-2] | (padded[1:-1] << 8) | (padded[2:] << 16)
    window_mask = (1 << window_bits) - 1
    table_lengths = table_lengths.astype(lane_dtype)
    # the narrowest type that holds every symbol and the out-of-range marker ``alphabet_size``
    table_symbols = table_symbols.astype(np.uint8 if alphabet_size < 256 else np.uint32)

    decoded = np.empty((block_size, n_blocks), dtype=table_symbols.dtype)  # (step, lane)
    position = (ends - np.diff(ends, prepend=0)).astype(lane_dtype)  # each block's start bit
    window = np.empty(n_blocks, dtype=lane_dtype)
    phase = np.empty(n_blocks, dtype=lane_dtype)
    last_lane_end = None
    for step in range(block_size):
        np.right_shift(position, 3, out=window)
        np.take(window_at_byte, window, out=window)
        np.bitwise_and(position, 7, out=phase)
        np.right_shift(window, phase, out=window)
        np.bitwise_and(window, window_mask, out=window)
        np.take(table_symbols, window, out=decoded[step])
        position += table_lengths[window]
        if step == last_block_size - 1:
            last_lane_end = int(position[-1])
    position[-1] = last_lane_end
    if not np.array_equal(position, ends):
        raise NetshrinkFormatError("huffman stream is corrupt: a block does not decode to its declared length")
    # block after block: torch's blocked transpose is several times numpy's strided copy
    flat = torch.from_numpy(decoded).T.contiguous().numpy().reshape(-1)[: (n_blocks - 1) * block_size + last_block_size]
    if flat.size and int(flat.max()) >= alphabet_size:
        raise NetshrinkFormatError("huffman stream is corrupt: it contains a bit pattern that is no code word")
    return flat
