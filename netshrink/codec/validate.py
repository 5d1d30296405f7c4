"""Validate a .nsk metadata document against the stream data present, before anything is decoded.

Order of checks, after safetensors' own header validation (huggingface/safetensors ``validate``):
the document is a JSON object of a readable ``format_version`` with a ``stream_crc``; the
architecture is absent, null or a zoo name with keyword arguments; every tensor names a known
dtype, a shape of non-negative ints with at most ``MAX_NUMEL`` elements, a known encoding chain
whose units accept their parameters, and declares exactly the coded streams that chain needs (raw
byte streams are implied by shape and params). Stream lengths are laid end to end in document
order, overflow-safe as in safetensors: no stream reaches past the end of the stream data, and
together they cover it exactly (no gap, no overlap, no trailing bytes). Every entropy-coded stream
must be able to hold its symbols in its bytes (``entropy.max_symbols``). Finally the declared
elements are bounded by ``max_params`` (by default ``params_limit`` of the file size: what a file
can make a reader allocate grows with its real bytes, not with its own claims) and the decoded
total by ``MAX_TOTAL_BYTES``. Each failure is one ``NetshrinkFormatError`` with a one-line reason.

What a file may make a reader do grows with its *counted bytes* only: its document (as counted by
``document.read_counted_document``) and its stream data, never padding in the safetensors header or
metadata, which holds the one ``"netshrink"`` key and nothing else. From them: the elements it may
declare (``params_limit``), the bytes a load may allocate, the replay of its log included
(``bytes_limit``), and how many tensors, log records and module registrations it may ask for
(``Limits``). Unknown keys in the document, a tensor entry or a stream entry are refused, so no
field is ignored.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from netshrink.codec.checks import checked_int
from netshrink.codec.document import read_counted_document
from netshrink.codec.entropy import METHODS, max_symbols
from netshrink.codec.tensor_encodings import (
    DTYPES,
    chain_roles,
    check_params,
    itemsize,
    parse_chain,
    raw_stream_bytes,
    symbol_streams,
)
from netshrink.core.errors import NetshrinkFormatError

#: version 3 leaves Huffman params at their defaults out (``max_length`` 16, one block); version 4
#: may store the document deflated (``document``); version 5 is written a stream at a time and
#: drops the all-streams checksum; version 6 stores Huffman code lengths as one digit each
#: (``huffman.LENGTH_DIGITS``); every version is read as it is
FORMAT_VERSION = 6
READABLE_VERSIONS = (2, 3, 4, 5, 6)
#: versions 2 to 4 carry a CRC-32 of all the stream bytes, ``stream_crc``; version 5 does not
STREAM_CRC_VERSIONS = (2, 3, 4)
METADATA_KEY = "netshrink"
#: the file's one uint8 tensor: every stream, end to end
STREAMS_KEY = "streams"
MAX_NUMEL = 2 ** 31
MAX_TOTAL_BYTES = 2 ** 36  # 64 GiB of decoded tensors
#: default element bound of a file (``params_limit``): this many elements per byte of file, and
#: never less than PARAMS_FLOOR. 1024 elements per byte is 1/128 bit per weight, 4096x smaller
#: than fp32: past anything pruning, sharing and entropy coding give real weights; only constant
#: or all-zero tensors compress further, and those are refused above the bound unless the caller
#: passes a larger ``max_params``
PARAMS_PER_FILE_BYTE = 1024
PARAMS_FLOOR = 2 ** 24
#: the document's record of the original model's dense fp32 bytes (the baseline of compression
#: rates, ``measure.size.fp32_baseline``); absent in files written before it was recorded
ORIGINAL_BYTES_KEY = "original_fp32_bytes"
#: a pebibyte: more than any model's fp32 state dict, so a larger number is a corrupt field
MAX_ORIGINAL_BYTES = 2 ** 50
#: bytes a load may allocate per counted byte (``PARAMS_PER_FILE_BYTE`` fp32 elements), and never
#: less than ``BYTES_FLOOR``: the decoded tensors with any cast copies, and everything the zoo build
#: and the log replay allocate, summed over their steps
BYTES_PER_FILE_BYTE = 4 * PARAMS_PER_FILE_BYTE
BYTES_FLOOR = 4 * PARAMS_FLOOR
#: a tensor costs its document entry at least this many counted bytes (its CRC-32 alone is four
#: bytes of entropy that deflate cannot remove)
BYTES_PER_TENSOR = 4
TENSORS_FLOOR = 1 << 10
#: the log's JSON values (every number, string, list and object in its records) and the module,
#: parameter and buffer registrations of its replay, per counted byte and at least: replaying a
#: value costs up to tens of microseconds (a layer named is looked up, checked and resized, on the
#: meta device and then for real), and a real log has a few hundred values
BYTES_PER_LOG_VALUE = 8
LOG_VALUES_FLOOR = 1 << 13
BYTES_PER_REGISTRATION = 8
REGISTRATIONS_FLOOR = 1 << 12
#: longest tensor name (a state-dict key; real ones are well under 200 characters)
MAX_NAME_CHARS = 1024
METADATA_KEYS = (METADATA_KEY,)
DOCUMENT_KEYS = ("format_version", "architecture", "transform_log", "sections", ORIGINAL_BYTES_KEY, "tensors",
                 "stream_crc")
TENSOR_KEYS = ("dtype", "shape", "chain", "params", "streams", "crc")
#: a tensor stored once for several state-dict names (tied weights: one storage) is written under
#: its first name; each later name's entry is ``{"alias": first name}`` and nothing else (format 5 on)
ALIAS_KEY = "alias"
ALIAS_VERSIONS = (5, 6)
STREAM_KEYS = ("n", "method", "params")


def params_limit(file_bytes: int) -> int:
    """The default ``max_params`` of a file of ``file_bytes`` counted bytes."""
    return max(PARAMS_FLOOR, PARAMS_PER_FILE_BYTE * file_bytes)


def bytes_limit(file_bytes: int) -> int:
    """The default allocation budget of a load of a file of ``file_bytes`` counted bytes."""
    return max(BYTES_FLOOR, BYTES_PER_FILE_BYTE * file_bytes)


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one file may make a reader do, from its counted bytes (see the module docstring)."""

    counted_bytes: int
    tensors: int
    log_values: int
    registrations: int

    @classmethod
    def of(cls, counted_bytes: int) -> Limits:
        return cls(counted_bytes, max(TENSORS_FLOOR, counted_bytes // BYTES_PER_TENSOR),
                   max(LOG_VALUES_FLOOR, counted_bytes // BYTES_PER_LOG_VALUE),
                   max(REGISTRATIONS_FLOOR, counted_bytes // BYTES_PER_REGISTRATION))


@dataclasses.dataclass
class StreamSpec:
    kind: str
    offset: int
    nbytes: int
    method: str | None
    params: dict[str, Any] | None


@dataclasses.dataclass
class TensorSpec:
    name: str
    dtype: str
    shape: list[int]
    chain: list[str]
    params: dict[str, dict[str, Any]]
    streams: dict[str, StreamSpec]
    crc: int
    #: the earlier tensor this one is an alias of (its dtype, shape and streams), or None
    alias: str | None = None

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def _fail(reason: str) -> None:
    raise NetshrinkFormatError(reason)


def _dict(value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        _fail(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _known_keys(entry: dict[str, Any], known: tuple[str, ...], what: str) -> None:
    unknown = sorted(key for key in entry if key not in known)
    if unknown:
        _fail(f"{what} has unknown keys {[key[:40] for key in unknown[:4]]}; it may hold {list(known)}")


def parse_metadata(metadata: dict[str, str] | None) -> tuple[dict[str, Any], int]:
    """The JSON document from the safetensors string metadata, with the fields the writer leaves
    out when empty filled in (``architecture``: None, ``transform_log``: [], ``original_fp32_bytes``:
    None), and the document's counted bytes."""
    if not metadata or METADATA_KEY not in metadata:
        _fail("not a netshrink file: the safetensors metadata has no 'netshrink' document")
    _known_keys(metadata, METADATA_KEYS, "the safetensors metadata")
    doc, document_bytes = read_counted_document(metadata[METADATA_KEY])
    doc = _dict(doc, "metadata document")
    _known_keys(doc, DOCUMENT_KEYS, "the metadata document")
    version = doc.get("format_version")
    if isinstance(version, bool) or version not in READABLE_VERSIONS:
        _fail(f"unknown format_version {str(version)[:40]!r}; this netshrink reads versions "
              f"{', '.join(map(str, READABLE_VERSIONS))} only (a newer file needs a newer netshrink)")
    arch = doc.setdefault("architecture", None)
    if arch is not None:
        arch = _dict(arch, "architecture")
        if not isinstance(arch.get("name"), str):
            _fail("architecture.name must be a string")
        _dict(arch.get("kwargs"), "architecture.kwargs")
    if not isinstance(doc.setdefault("transform_log", []), list):
        _fail("transform_log must be a list")
    sections = _dict(doc.setdefault("sections", {}), "sections")
    if doc["format_version"] < 5:  # only files of versions 2 to 4 kept those records
        _upgrade_legacy_log(doc)
    if not all(isinstance(name, str) and isinstance(value, dict) for name, value in sections.items()):
        _fail("sections must map names to JSON objects")
    _dict(doc.get("tensors"), "tensors")
    if version in STREAM_CRC_VERSIONS:
        checked_int(doc.get("stream_crc"), 0, 2 ** 32 - 1, "stream_crc")
    elif "stream_crc" in doc:
        _fail(f"format version {version} has no stream_crc (each tensor's crc covers its bytes)")
    if doc.setdefault(ORIGINAL_BYTES_KEY, None) is not None:
        checked_int(doc[ORIGINAL_BYTES_KEY], 0, MAX_ORIGINAL_BYTES, ORIGINAL_BYTES_KEY)
    return doc, document_bytes


def json_values(value: Any) -> int:
    """How many JSON values (numbers, strings, lists, objects; keys not counted) ``value`` holds."""
    count, stack = 0, [value]
    while stack:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return count


def check_counts(doc: dict[str, Any], limits: Limits) -> None:
    """The document's tensors and the values of its log are within what its counted bytes allow."""
    for what, count, limit in (("tensors", len(doc["tensors"]), limits.tensors),
                               ("transform log values", json_values(doc["transform_log"]), limits.log_values)):
        if count > limit:
            _fail(f"the file declares {count} {what}, more than its {limits.counted_bytes} bytes of document "
                  f"and streams allow ({limit})")


#: log records that files of versions 2 to 4 may hold and that are not transforms: ``encode`` asked
#: the writer for encodings (now ``save(..., encodings=)``), ``dynamic_profile`` held a measured
#: profile table (now the ``dynamic_profile`` metadata section)
_LEGACY_WRITER_RECORD = "encode"
_LEGACY_PROFILE_RECORD = "dynamic_profile"


def _upgrade_legacy_log(doc: dict[str, Any]) -> None:
    """Drop the records of an older file that are not replayable transforms, moving the last
    profile table into its section (the newest record was the one in force)."""
    log = []
    for record in doc["transform_log"]:
        verb = record.get("verb") if isinstance(record, dict) else None
        if verb == _LEGACY_PROFILE_RECORD and isinstance(record.get("config"), dict):
            config = record["config"]
            doc["sections"][_LEGACY_PROFILE_RECORD] = {key: config.get(key) for key in ("points", "device", "threads")}
        elif verb != _LEGACY_WRITER_RECORD:
            log.append(record)
    doc["transform_log"] = log


def validate_tensor(name: str, entry: Any, offset: int, data_bytes: int) -> TensorSpec:
    """One tensor's entry; its streams start at ``offset`` of the ``data_bytes`` of stream data."""
    entry = _dict(entry, f"tensor {name!r}")
    _known_keys(entry, TENSOR_KEYS, f"tensor {name!r}")
    dtype = entry.get("dtype", "float32")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        _fail(f"tensor {name!r} has unknown dtype {str(dtype)[:40]!r}")
    shape = entry.get("shape")
    if not isinstance(shape, list) or len(shape) > 8:
        _fail(f"tensor {name!r} shape must be a list of at most 8 integers")
    for dim in shape:
        checked_int(dim, 0, MAX_NUMEL, f"tensor {name!r} shape entry")
    if math.prod(shape) > MAX_NUMEL:
        _fail(f"tensor {name!r} declares {math.prod(shape)} elements, more than {MAX_NUMEL}")
    try:
        chain = list(parse_chain(entry.get("chain", "dense")))
    except NetshrinkFormatError as error:
        raise NetshrinkFormatError(f"tensor {name!r}: {error}") from None
    params = _dict(entry.get("params", {}), f"tensor {name!r} params")
    check_params(chain, params, dtype, shape)
    declared = _dict(entry.get("streams", {}), f"tensor {name!r} streams")
    roles = chain_roles(chain)
    coded = [role for role, kind in roles.items() if kind != "bytes"]
    if set(declared) != set(coded):
        _fail(f"tensor {name!r} declares streams {sorted(declared)[:8]}, its encoding needs "
              f"{sorted(coded)}")
    counts = symbol_streams(chain, params, shape)
    streams = {}
    for role, kind in roles.items():
        what = f"stream {name}:{role}"
        if kind == "bytes":  # raw bytes: the length follows from shape and params
            nbytes, method, stream_params = raw_stream_bytes(chain, role, params, dtype, shape), None, None
        else:
            info = _dict(declared[role], what)
            _known_keys(info, STREAM_KEYS, what)
            nbytes = checked_int(info.get("n"), 0, 2 ** 63, f"{what} length")
            method = info.get("method")
            if kind == "symbols" and method not in METHODS:
                _fail(f"{what} has unknown entropy method {str(method)[:40]!r}")
            method = method if kind == "symbols" else None
            stream_params = _dict(info.get("params", {}), f"{what} params")
            if kind == "symbols":
                symbols, alphabet = counts[role]
                limit = max_symbols(method, stream_params, nbytes, alphabet)
                if limit is not None and symbols > limit:
                    _fail(f"{what} declares {symbols} symbols, more than its {nbytes} bytes can hold ({limit})")
        if nbytes > data_bytes - offset:  # Python ints: no overflow, but no huge offsets either
            _fail(f"{what} declares {nbytes} bytes at offset {offset}, past the end of the "
                  f"{data_bytes} bytes of stream data")
        streams[role] = StreamSpec(kind, offset, nbytes, method, stream_params)
        offset += nbytes
    crc = checked_int(entry.get("crc"), 0, 2 ** 32 - 1, f"tensor {name!r} crc")
    return TensorSpec(name, dtype, list(shape), chain, params, streams, crc)


def validate_alias(name: str, entry: dict[str, Any], specs: dict[str, TensorSpec], version: int) -> TensorSpec:
    """An alias entry ``{"alias": target}``: the target is an earlier tensor of the document that
    is not itself an alias (so no chains and no cycles); the alias takes its dtype, shape, streams
    and checksum and adds no stream bytes."""
    _known_keys(entry, (ALIAS_KEY,), f"alias tensor {name!r}")
    if version not in ALIAS_VERSIONS:
        _fail(f"tensor {name!r} is an alias, which format version {version} does not have")
    target = entry[ALIAS_KEY]
    if not isinstance(target, str) or target not in specs:
        _fail(f"tensor {name!r} is an alias of {str(target)[:80]!r}, which is no earlier tensor of the file")
    if specs[target].alias is not None:
        _fail(f"tensor {name!r} is an alias of {target[:80]!r}, itself an alias (aliases name the stored tensor)")
    return dataclasses.replace(specs[target], name=name, alias=target)


def validate_document(doc: dict[str, Any], data_bytes: int, max_params: int | None = None) -> dict[str, TensorSpec]:
    """Every tensor spec of a parsed document; the streams, end to end in document order, must
    cover the ``data_bytes`` of stream data exactly. Also bounds the declared elements by
    ``max_params`` (None: no bound but the format's) and the decoded total size."""
    specs: dict[str, TensorSpec] = {}
    offset = 0
    for name, entry in doc["tensors"].items():
        if not 0 < len(name) <= MAX_NAME_CHARS:
            _fail(f"tensor name {name[:40]!r}... must have 1 to {MAX_NAME_CHARS} characters")
        if isinstance(entry, dict) and ALIAS_KEY in entry:
            specs[name] = validate_alias(name, entry, specs, doc["format_version"])
            continue
        spec = specs[name] = validate_tensor(name, entry, offset, data_bytes)
        offset += sum(s.nbytes for s in spec.streams.values())
    if offset != data_bytes:
        _fail(f"the streams declare {offset} bytes in all, the file holds {data_bytes} bytes of "
              f"stream data")
    elements = sum(spec.numel for spec in specs.values())  # aliases too: a model may hold them untied
    if max_params is not None and elements > max_params:
        _fail(f"the file declares {elements} elements, more than max_params={max_params} (the default "
              f"bound for its size); pass a larger max_params to read a file you trust")
    total = sum(spec.numel * itemsize(spec.dtype) for spec in specs.values())
    if total > MAX_TOTAL_BYTES:
        _fail(f"decoded tensors would take {total} bytes, more than the {MAX_TOTAL_BYTES} cap")
    return specs
