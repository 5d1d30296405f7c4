"""``sparse``: pruned tensors by relative index (Han et al. 2016, section 2, figure 2), the stored
entries' values coded after by any value encoding (``sparse+codebook`` is Deep Compression).

Streams: ``gaps`` (entropy-coded, ``2**index_bits`` alphabet), then the value encoding's streams
prefixed ``values.``. Entries include the fillers that bridge gaps too long for ``index_bits``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from netshrink.codec.crc import crc32
from netshrink.codec.encodings.base import (
    BITS_NUMPY,
    SYMBOLS,
    WORK_BYTES_PER_SYMBOL,
    Encoded,
    Encoding,
    decode_symbol_stream,
    itemsize,
    param_int,
    symbol_stream,
)
from netshrink.codec.relative_index import best_index_bits, relative_index_decode, relative_index_encode
from netshrink.core.errors import NetshrinkFormatError

MAX_INDEX_BITS = 16
SPARSE_MIN_ZEROS = 0.3  # try the sparse index only when at least this fraction is zero
#: values up to this many distinct patterns are assumed to be coded at ceil(log2(distinct)) bits
#: when choosing the index width
_SMALL_CODEBOOK = 256
PREFIX = "values."


def _cheapest(candidates: list[Encoded | None]) -> Encoded | None:
    """Fewest bytes; ties go to the earlier candidate."""
    best = None
    for candidate in candidates:
        if candidate is not None and (best is None or candidate.cost() < best.cost()):
            best = candidate
    return best


class Sparse(Encoding):
    name = "sparse"
    roles = {"gaps": SYMBOLS}
    values = False
    wraps = True

    def encode_with(self, bits: np.ndarray, dtype: str, entropy: str, inner: list[Encoding],
                    min_zeros: float = SPARSE_MIN_ZEROS) -> Encoded | None:
        """Relative index of the nonzero patterns, values coded by the cheapest of ``inner``."""
        if bits.size == 0:
            return None
        positions = np.flatnonzero(bits != 0)
        if positions.size > (1 - min_zeros) * bits.size:
            return None
        distinct = np.unique(bits[positions]).size + 1
        value_bits = max(1, math.ceil(math.log2(distinct))) if distinct <= _SMALL_CODEBOOK else 8 * bits.itemsize
        index_bits = int(best_index_bits(positions, value_bits))
        gaps, entry_positions = relative_index_encode(positions, index_bits)
        values = bits[np.asarray(entry_positions, dtype=np.int64)]
        encoded = _cheapest([coder.encode(values, dtype, [values.size], entropy) for coder in inner])
        if encoded is None:
            return None
        gap_stream = symbol_stream("gaps", np.asarray(gaps).astype(np.uint16), 2 ** index_bits, entropy)
        streams = [gap_stream] + [dataclasses.replace(s, role=PREFIX + s.role) for s in encoded.streams]
        params = {"sparse": {"index_bits": index_bits, "entries": int(values.size)}, **encoded.params}
        return Encoded(["sparse", *encoded.chain], params, streams)

    def check(self, params, dtype, shape, count) -> None:
        param_int(params, "sparse", "index_bits", 1, MAX_INDEX_BITS)
        param_int(params, "sparse", "entries", 0, count)

    def entries(self, params) -> int:
        return params["sparse"]["entries"]

    def symbol_streams(self, params, count) -> dict[str, tuple[int, int]]:
        return {"gaps": (self.entries(params), 2 ** params["sparse"]["index_bits"])}

    def decode_entries(self, params, streams, dtype, numel: int, inner: Encoding) -> tuple[np.ndarray, np.ndarray]:
        """The flat positions (int64, strictly increasing) and bit patterns of the entries, fillers
        included: memory in the number of entries, never in ``numel``."""
        entries = self.entries(params)
        gaps = decode_symbol_stream(streams["gaps"], entries, 2 ** params["sparse"]["index_bits"])
        positions = np.asarray(relative_index_decode(gaps, numel), dtype=np.int64).reshape(-1)
        del gaps
        if positions.size != entries or (positions.size and (positions[0] < 0 or positions[-1] >= numel)):
            raise NetshrinkFormatError("sparse index points outside the tensor")  # gaps >= 0: increasing
        inner_streams = {role.removeprefix(PREFIX): s for role, s in streams.items() if role.startswith(PREFIX)}
        values = inner.decode(params, inner_streams, dtype, [entries], entries)
        if values.size != entries:
            raise NetshrinkFormatError(f"sparse values decoded to {values.size} entries, expected {entries}")
        return positions, values

    def decode_with(self, params, streams, dtype, numel: int, inner: Encoding) -> np.ndarray:
        positions, values = self.decode_entries(params, streams, dtype, numel, inner)
        bits = np.zeros(numel, dtype=BITS_NUMPY[itemsize(dtype)])  # lazily zeroed pages
        bits[positions] = values
        return bits

    def work_bytes_with(self, params, dtype, numel: int, inner: Encoding) -> int:
        entries = self.entries(params)
        return (numel * itemsize(dtype) + entries * (2 * 8 + WORK_BYTES_PER_SYMBOL)
                + inner.work_bytes(params, dtype, entries))

    def kept_and_crc(self, params, streams, dtype, numel: int, inner: Encoding,
                     chunk: int = 1 << 20) -> tuple[int, int]:
        """Nonzero count and CRC-32 of the decoded bytes without ever holding the dense tensor:
        the zeros between entries are checksummed ``chunk`` elements at a time."""
        positions, values = self.decode_entries(params, streams, dtype, numel, inner)
        kept = int(np.count_nonzero(values))
        crc = 0
        buffer = np.zeros(min(chunk, numel), dtype=BITS_NUMPY[itemsize(dtype)])
        bounds = np.searchsorted(positions, np.arange(0, numel + chunk, chunk))
        for index, start in enumerate(range(0, numel, chunk)):
            piece = buffer[: min(chunk, numel - start)]
            lo, hi = int(bounds[index]), int(bounds[index + 1])
            piece[positions[lo:hi] - start] = values[lo:hi]
            crc = crc32(piece, crc)  # little-endian dtype: the file's byte order
            piece[positions[lo:hi] - start] = 0
        return kept, crc
