"""Opening a .nsk file and decoding its tensors one at a time, within the bounds its bytes allow.

``open_file`` checks the outer file, lets safetensors parse its header, maps the stream data
(``stream_file.StreamReader``) and validates the document (``validate``) before anything is
decoded; the result knows the file's limits (``validate.Limits``) and the load budget they give.
Each tensor is then decoded from zero-copy views of its own streams, so memory holds at most one
tensor's decoding at a time (``decode_peak``), never the whole file. Files of format versions 2
to 4 carry a checksum of all their stream bytes (``stream_crc``), checked a few megabytes at a
time before decoding; version 5 checks each decoded tensor's CRC-32 only.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import torch

from netshrink.codec.crc import crc32
from netshrink.codec.stream_file import StreamReader
from netshrink.codec.tensor_encodings import (
    Stream,
    decode_streams,
    itemsize,
    sparse_kept_and_crc,
    tensor_bits,
    work_bytes,
)
from netshrink.codec.validate import (
    STREAMS_KEY,
    Limits,
    TensorSpec,
    bytes_limit,
    check_counts,
    params_limit,
    parse_metadata,
    validate_document,
)
from netshrink.core.errors import NetshrinkFormatError, one_line
from netshrink.core.rebuild import Budget, check_log

MAX_FILE_BYTES = 2 ** 40
#: ``read_tensors`` refuses a file whose decoding would allocate more than this by default, the
#: decoders' intermediates included (a file of a few hundred bytes can declare a huge all-zero
#: sparse tensor); ``load`` is bounded by ``max_params`` and the model it fills instead
MAX_DECODED_BYTES = 2 ** 30
#: the first bytes of a safetensors file: a little-endian u64 header length, then a JSON object
_SAFETENSORS_PREFIX = 9
T = TypeVar("T")


def _check_outer(path: str | os.PathLike) -> int:
    """The file's size, after checking that it can be a safetensors file at all; otherwise a
    one-line "not a netshrink file" that says what the file is not."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as handle:
            head = handle.read(_SAFETENSORS_PREFIX)
    except OSError as error:
        raise NetshrinkFormatError(f"cannot read {os.fspath(path)!r}: {error.strerror}") from None
    if size < _SAFETENSORS_PREFIX + 1:
        raise NetshrinkFormatError(f"not a netshrink file: {size} bytes is too short for any .nsk file")
    if size > MAX_FILE_BYTES:
        raise NetshrinkFormatError(f"not a netshrink file: {size} bytes is more than any .nsk file ({MAX_FILE_BYTES})")
    header_bytes = int.from_bytes(head[:8], "little")
    if header_bytes > size - 8 or head[8:9] != b"{":
        raise NetshrinkFormatError("not a netshrink file: not safetensors (a .nsk file starts with an 8-byte "
                                   "header length and a JSON header; this one does not)")
    return size


@dataclasses.dataclass
class OpenedFile:
    """A validated file: its document, tensor specs, mapped stream data and the limits its counted
    bytes (document and stream data, ``validate.Limits``) allow. Close it (or use ``with``)."""

    doc: dict[str, Any]
    specs: dict[str, TensorSpec]
    reader: StreamReader
    limits: Limits

    def budget(self, max_params: int | None) -> Budget:
        """What a load may allocate and register: ``bytes_limit`` of the counted bytes, or for a
        caller's own ``max_params`` that many elements of the widest dtype."""
        allowed = bytes_limit(self.limits.counted_bytes) if max_params is None else 8 * max_params
        return Budget(allowed, self.limits.registrations)

    def streams(self, spec: TensorSpec) -> dict[str, Stream]:
        """The tensor's streams as zero-copy views of the mapped file."""
        return {role: Stream(role, self.reader.view(s.offset, s.nbytes), s.method, s.params)
                for role, s in spec.streams.items()}

    def check_stream_crc(self) -> None:
        """Versions 2 to 4: the checksum of all stream bytes, a few megabytes at a time."""
        if "stream_crc" not in self.doc:
            return
        crc = 0
        for chunk in self.reader.chunks(0, self.reader.nbytes):
            crc = crc32(chunk, crc)
        if crc != self.doc["stream_crc"]:
            raise NetshrinkFormatError("stream checksum mismatch (file corrupted)")

    def close(self) -> None:
        self.reader.close()

    def __enter__(self) -> OpenedFile:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def open_file(path: str | os.PathLike, max_params: int | None = None) -> OpenedFile:
    """Check the outer file, parse and validate the document (elements bounded by ``max_params``,
    None: ``params_limit`` of the counted bytes); nothing is decoded yet."""
    _check_outer(path)
    reader = StreamReader(path, STREAMS_KEY)
    try:
        doc, document_bytes = parse_metadata(reader.metadata)
        if reader.keys != [STREAMS_KEY]:
            raise NetshrinkFormatError(f"the file must hold exactly one tensor {STREAMS_KEY!r}, "
                                       f"it holds {[key[:40] for key in sorted(reader.keys)[:4]]}")
        if reader.dtype != "U8" or len(reader.shape) != 1:
            raise NetshrinkFormatError(f"tensor {STREAMS_KEY!r} is not a 1-D uint8 tensor")
        data_bytes = int(reader.shape[0])
        limits = Limits.of(document_bytes + data_bytes)
        check_counts(doc, limits)
        specs = validate_document(doc, data_bytes,
                                  params_limit(limits.counted_bytes) if max_params is None else max_params)
        check_log(doc["transform_log"])
    except Exception as error:  # noqa: BLE001 (untrusted input: any failure is a format error)
        reader.close()
        if isinstance(error, NetshrinkFormatError):
            raise
        raise NetshrinkFormatError(f"malformed file ({one_line(error)})") from None
    return OpenedFile(doc, specs, reader, limits)


def decoding(name: str, work: Callable[[], T]) -> T:
    """Run ``work()`` on one tensor's untrusted streams; nothing but NetshrinkFormatError escapes."""
    try:
        return work()
    except NetshrinkFormatError as error:
        raise NetshrinkFormatError(f"tensor {name[:80]!r}: {one_line(error)}") from None
    except Exception as error:  # noqa: BLE001 (untrusted input: any failure is a format error)
        raise NetshrinkFormatError(f"tensor {name[:80]!r} cannot be decoded ({one_line(error)})") from None


def decode_tensor(opened: OpenedFile, spec: TensorSpec) -> torch.Tensor:
    """One tensor decoded from its streams and checked against its CRC-32."""
    tensor = decoding(spec.name, lambda: decode_streams(spec.chain, spec.params, opened.streams(spec),
                                                        spec.dtype, spec.shape))
    check_crc(spec, crc32(tensor_bits(tensor).data))
    return tensor


def check_crc(spec: TensorSpec, crc: int) -> None:
    if crc != spec.crc:
        raise NetshrinkFormatError(f"tensor {spec.name[:80]!r}: checksum of the decoded tensor does not match")


def decode_peak(specs: dict[str, TensorSpec]) -> int:
    """Most bytes decoding any one tensor allocates at once, its output included."""
    return max((work_bytes(spec.chain, spec.params, spec.dtype, spec.shape) for spec in specs.values()), default=0)


def _decoded_bytes(specs: dict[str, TensorSpec]) -> int:
    """Peak bytes of decoding every tensor and keeping them: all outputs, plus the largest one
    tensor's intermediates (they are freed before the next tensor)."""
    outputs = {name: spec.numel * itemsize(spec.dtype) for name, spec in specs.items() if spec.alias is None}
    extra = max((work_bytes(spec.chain, spec.params, spec.dtype, spec.shape) - outputs[name]
                 for name, spec in specs.items() if spec.alias is None), default=0)
    return sum(outputs.values()) + max(0, extra)


def refuse_above(what: str, nbytes: int, cap: int | None, knob: str = "max_decoded_bytes") -> None:
    if cap is not None and nbytes > cap:
        raise NetshrinkFormatError(f"{what} would decode to {nbytes} bytes, more than the "
                                   f"{cap} bytes {knob} allows (raise it to read this file)")


def read_tensors(path: str | os.PathLike, max_decoded_bytes: int | None = MAX_DECODED_BYTES,
                 max_params: int | None = None,
                 ) -> tuple[dict[str, Any], dict[str, TensorSpec], dict[str, torch.Tensor]]:
    """Validate and decode a file without building a model: ``(document, specs, tensors)``.

    A file of a few hundred bytes can declare gigabytes of all-zero tensors, so a file whose
    decoding would allocate more than ``max_decoded_bytes`` (outputs and the decoders'
    intermediates) is refused before anything is decoded (None: only the format's own 64 GiB
    bound), as is one declaring more than ``max_params`` elements (None: ``params_limit`` of the
    file's counted bytes, see ``validate``)."""
    with open_file(path, max_params) as opened:
        refuse_above("the file's tensors", _decoded_bytes(opened.specs), max_decoded_bytes)
        opened.check_stream_crc()
        tensors: dict[str, torch.Tensor] = {}
        for name, spec in opened.specs.items():  # an alias is its target's tensor, decoded once
            tensors[name] = tensors[spec.alias] if spec.alias is not None else decode_tensor(opened, spec)
        return opened.doc, opened.specs, tensors


def read_kept(path: str | os.PathLike, max_decoded_bytes: int | None = MAX_DECODED_BYTES,
              max_params: int | None = None,
              ) -> tuple[dict[str, Any], dict[str, TensorSpec], dict[str, int]]:
    """Validate a file and count each tensor's nonzero elements: ``(document, specs, kept)``.

    Tensors are decoded one at a time and dropped; a sparse tensor is never expanded (its entries
    are counted and its checksum is computed a slice at a time), so memory is bounded by the
    largest non-sparse tensor or sparse entry list, each refused above ``max_decoded_bytes``;
    ``max_params`` as in ``read_tensors``."""
    with open_file(path, max_params) as opened:
        opened.check_stream_crc()
        kept = {}
        for name, spec in opened.specs.items():
            if spec.alias is not None:
                kept[name] = kept[spec.alias]
                continue
            size = itemsize(spec.dtype)
            if spec.chain[0] == "sparse":
                refuse_above(f"tensor {name[:80]!r}'s entries", spec.params["sparse"]["entries"] * size,
                             max_decoded_bytes)
                kept[name], crc = decoding(name, lambda spec=spec: sparse_kept_and_crc(
                    spec.chain, spec.params, opened.streams(spec), spec.dtype, spec.numel))
            else:
                refuse_above(f"tensor {name[:80]!r}", work_bytes(spec.chain, spec.params, spec.dtype, spec.shape),
                             max_decoded_bytes)
                bits = tensor_bits(decoding(name, lambda spec=spec: decode_streams(
                    spec.chain, spec.params, opened.streams(spec), spec.dtype, spec.shape)))
                kept[name], crc = int(np.count_nonzero(bits)), crc32(bits.data)
                del bits
            check_crc(spec, crc)
        return opened.doc, opened.specs, kept
