"""The outer safetensors file of a .nsk, written and read a stream at a time.

A safetensors file is an 8-byte little-endian header length, a JSON header, then the tensor data
with no gaps (huggingface/safetensors, "Format"); the header may end in spaces. A .nsk file holds
one 1-D uint8 tensor, ``"streams"``, and its document in the header's ``__metadata__``. The
document (lengths and checksums) is known only once every stream is written, so ``StreamWriter``
reserves header space, writes the streams straight to the file as each tensor is encoded, then
seeks back and fills the header, padded with spaces; for a header larger than the reservation
(rare: huge entropy tables) the streams are first moved up in the file, a few megabytes at a
time. Memory never holds more than one tensor's streams.

``StreamReader`` maps the file (``mmap``: its pages are the page cache's, not the process's
anonymous memory) and hands out each stream as a zero-copy view, or reads it straight into a
tensor's memory. The header is parsed and checked by safetensors itself (``safe_open``).
"""

from __future__ import annotations

import json
import mmap
import os
from collections.abc import Iterator
from typing import Any, BinaryIO

from safetensors import safe_open

from netshrink.codec.crc import crc32, crc32_combine
from netshrink.codec.threads import pool, threads
from netshrink.core.errors import NetshrinkFormatError, one_line
from netshrink.core.files import open_atomically

#: bytes a write or read moves at once: large enough for full speed, small enough to stay in cache
CHUNK_BYTES = 1 << 22
_HEADER_LENGTH = 8
#: safetensors readers align the data start to 8 bytes
_ALIGN = 8
#: header padding above this share of the file is removed by moving the streams down
_SPARE_SHARE = 1000


def _header(metadata: dict[str, str], tensor: str, nbytes: int) -> bytes:
    return json.dumps({"__metadata__": metadata,
                       tensor: {"dtype": "U8", "shape": [nbytes], "data_offsets": [0, nbytes]}},
                      separators=(",", ":")).encode("utf-8")


def _padded(header: bytes, size: int) -> bytes:
    return len(header := header + b" " * (size - len(header))).to_bytes(_HEADER_LENGTH, "little") + header


class StreamWriter:
    """Writes ``path`` atomically (``core.files.open_atomically``): ``write`` the stream bytes in
    order, then ``finish(metadata)``. Use as a context manager; a failure leaves no file."""

    def __init__(self, path: str | os.PathLike, tensor: str, reserve: int) -> None:
        self.path, self.tensor = path, tensor
        self.reserve = -(-(reserve + _HEADER_LENGTH) // _ALIGN) * _ALIGN - _HEADER_LENGTH
        self.size = 0
        self._context = open_atomically(path)
        self._file: BinaryIO | None = None

    def __enter__(self) -> StreamWriter:
        self._file = self._context.__enter__()
        self._file.seek(_HEADER_LENGTH + self.reserve)
        return self

    def write(self, data: Any) -> int:
        """Append ``data`` (bytes or a buffer) and return its CRC-32, computed a chunk at a time
        while the chunk is in cache."""
        view = memoryview(data).cast("B")
        crc = 0
        for start in range(0, len(view), CHUNK_BYTES):
            chunk = view[start:start + CHUNK_BYTES]
            crc = crc32(chunk, crc)
            self._file.write(chunk)
        self.size += len(view)
        return crc

    def finish(self, metadata: dict[str, str]) -> None:
        """Fill the header; the file is put in place when the context manager exits without error.
        A header that outgrew its reservation moves the streams up; one that leaves more than
        ``_SPARE_SHARE`` of the file as padding moves them down (a small file stays small)."""
        header = _header(metadata, self.tensor, self.size)
        size = -(-(len(header) + _HEADER_LENGTH) // _ALIGN) * _ALIGN - _HEADER_LENGTH
        spare = self.reserve - size
        if spare < 0 or spare > max(_ALIGN, (self.size + size) // _SPARE_SHARE):
            self._move(size - self.reserve)
        else:
            size = self.reserve
        self._file.seek(0)
        self._file.write(_padded(header, size))

    def _move(self, shift: int) -> None:
        """Move the streams ``shift`` bytes (up or down), a few megabytes at a time, in the order
        that never overwrites bytes not yet moved."""
        self._file.flush()
        descriptor, start = self._file.fileno(), _HEADER_LENGTH + self.reserve
        ends = range(start + self.size, start, -CHUNK_BYTES) if shift > 0 else range(start, start + self.size,
                                                                                     CHUNK_BYTES)
        for edge in ends:
            begin, end = (max(start, edge - CHUNK_BYTES), edge) if shift > 0 else (edge, min(edge + CHUNK_BYTES,
                                                                                           start + self.size))
            os.pwrite(descriptor, os.pread(descriptor, end - begin, begin), begin + shift)
        os.ftruncate(descriptor, start + shift + self.size)
        self.reserve += shift

    def __exit__(self, kind, error, trace) -> bool:
        return bool(self._context.__exit__(kind, error, trace))


class StreamReader:
    """A .nsk file's header (parsed by safetensors) and its ``tensor``'s bytes, mapped."""

    def __init__(self, path: str | os.PathLike, tensor: str) -> None:
        try:
            handle = safe_open(os.fspath(path), framework="numpy")
            self.metadata: dict[str, str] | None = handle.metadata()
            self.keys = list(handle.keys())
        except Exception as error:  # noqa: BLE001 (the library's own header errors)
            raise NetshrinkFormatError(f"not a valid safetensors file ({one_line(error)})") from None
        self.dtype = self.shape = None
        if tensor in self.keys:
            view = handle.get_slice(tensor)
            self.dtype, self.shape = view.get_dtype(), view.get_shape()
        self._file = open(path, "rb")  # noqa: SIM115 (closed by close())
        header = int.from_bytes(self._file.read(_HEADER_LENGTH), "little")
        self.start = _HEADER_LENGTH + header
        size = os.fstat(self._file.fileno()).st_size
        self.nbytes = size - self.start
        self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        self._view = memoryview(self._map) if self._map is not None else memoryview(b"")

    def view(self, offset: int, nbytes: int) -> memoryview:
        """The ``nbytes`` of the tensor's data at ``offset``, without copying (read-only)."""
        start = self.start + offset
        return self._view[start:start + nbytes]

    def chunks(self, offset: int, nbytes: int) -> Iterator[memoryview]:
        for start in range(offset, offset + nbytes, CHUNK_BYTES):
            yield self.view(start, min(CHUNK_BYTES, offset + nbytes - start))

    def read_into(self, offset: int, target: memoryview) -> int:
        """Read the data at ``offset`` straight into ``target`` (one copy, from the page cache) and
        return its CRC-32. A large target is split in one piece per thread (``os.preadv`` and
        ``crc.crc32`` release the GIL), each read and checksummed a chunk at a time while the
        chunk is in cache, and the pieces' CRCs combined (``crc.crc32_combine``)."""
        target = target.cast("B")
        pieces = min(threads(), max(1, len(target) // (2 * CHUNK_BYTES)))
        if pieces == 1:
            return self._read_piece(offset, target)
        bounds = [len(target) * k // pieces for k in range(pieces + 1)]
        futures = [pool().submit(self._read_piece, offset + bounds[k], target[bounds[k]:bounds[k + 1]])
                   for k in range(pieces)]
        crc = 0
        for k, future in enumerate(futures):
            crc = crc32_combine(crc, future.result(), bounds[k + 1] - bounds[k])
        return crc

    def _read_piece(self, offset: int, target: memoryview) -> int:
        crc, descriptor = 0, self._file.fileno()
        for start in range(0, len(target), CHUNK_BYTES):
            chunk = target[start:start + CHUNK_BYTES]
            if os.preadv(descriptor, [chunk], self.start + offset + start) != len(chunk):
                raise NetshrinkFormatError("the file ends inside a stream (truncated)")
            crc = crc32(chunk, crc)
        return crc

    def close(self) -> None:
        """Unmap and close; a view still held (by an exception's traceback, say) keeps the map
        until it is collected."""
        try:
            self._view.release()
            if self._map is not None:
                self._map.close()
        except BufferError:
            pass
        self._file.close()

    def __enter__(self) -> StreamReader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
