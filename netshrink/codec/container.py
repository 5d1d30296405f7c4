"""The .nsk compressed model file: ``save(model, path)`` and ``load(path) -> nn.Module``.

Outer file: safetensors (no pickle; its header is validated by its own parser). Inside, one 1-D
uint8 tensor ``"streams"`` holding every encoded stream end to end (zero-length for a model
without any stream bytes), and one string metadata entry ``"netshrink"`` holding a compact JSON
document, deflated when that is shorter (``document``; format version 4; versions 2 and 3 are read
too)::

    {"format_version": 4,
     "architecture": {"name": zoo name, "kwargs": {...}},     (left out for a user's own class)
     "transform_log": [...],                                   (left out when empty)
     "sections": {name: {...}},        (measurements such as a dynamic profile; left out when empty)
     "original_fp32_bytes": dense fp32 bytes of the original model (the rates' baseline; left out
                            when unknown, as in files written before it was recorded)
     "tensors": {name: {"dtype": "float16",                    (left out for float32)
                        "shape": [...],
                        "chain": "sparse+codebook",            (left out for dense)
                        "params": {coder: {...}},              (left out when empty)
                        "streams": {role: {"n": bytes, "method": entropy coder, "params": {...}}},
                        "crc": CRC-32 of the decoded tensor}},
     "stream_crc": CRC-32 of all the stream bytes}

Streams follow one another in document order of the tensors, and within a tensor in the role order
of its chain (``encodings.chain_roles``), so offsets are implied by the lengths. Only coded streams
(entropy-coded symbols, float planes) are declared; a raw byte stream (``raw``, ``codebook``,
``row_values``) has the one length its shape and params allow. ``chain`` is the encoding (each
a unit of ``netshrink.codec.encodings``); ``crc`` is over the decoded tensor's raw little-endian bytes. This costs
about as many bytes per tensor as a plain safetensors header entry, so a small model with many
small tensors still gets a smaller file than its dense fp32 safetensors.

The loader validates everything (``validate``), bounds the declared elements by ``max_params``
(by default by the file's size, so a small file cannot make it build or fill a huge model), and
checks ``stream_crc`` before decoding, rebuilds
the architecture from the zoo and the transform log (``netshrink.core.rebuild``) or takes the
caller's model, and checks that the state dict matches; every failure is one
``NetshrinkFormatError``.
"""

from __future__ import annotations

import json
import os
import zlib
from typing import Any

import numpy as np
import safetensors.numpy
import torch
from safetensors import safe_open
from torch import nn
from torch.nn.utils import parametrize

from netshrink.codec.document import pack_document
from netshrink.codec.entropy import METHODS
from netshrink.codec.tensor_encodings import (
    FLOAT_DTYPES,
    Encoded,
    Stream,
    chain_roles,
    decode_streams,
    dtype_name,
    encode_tensor,
    itemsize,
    sparse_kept_and_crc,
    tensor_bits,
    work_bytes,
)
from netshrink.codec.validate import (
    FORMAT_VERSION,
    METADATA_KEY,
    ORIGINAL_BYTES_KEY,
    STREAMS_KEY,
    TensorSpec,
    params_limit,
    parse_metadata,
    validate_document,
)
from netshrink.core.errors import ConfigError, NetshrinkError, NetshrinkFormatError, one_line
from netshrink.core.files import write_atomically
from netshrink.core.rebuild import check_log, replay
from netshrink.core.transform_log import get_arch, get_log, get_sections, set_arch, set_log, set_section
from netshrink.measure.size import original_size, remember_original_size, set_original_size

MAX_FILE_BYTES = 2 ** 40
#: ``read_tensors`` refuses a file whose decoding would allocate more than this by default, the
#: decoders' intermediates included (a file of a few hundred bytes can declare a huge all-zero
#: sparse tensor); ``load`` is bounded by ``max_params`` and the model it fills instead
MAX_DECODED_BYTES = 2 ** 30
#: the first bytes of a safetensors file: a little-endian u64 header length, then a JSON object
_SAFETENSORS_PREFIX = 9


def _crc(data: bytes | memoryview | list[bytes]) -> int:
    crc = 0
    for chunk in data if isinstance(data, list) else [data]:
        crc = zlib.crc32(chunk, crc)
    return crc


def _tensor_entry(tensor: torch.Tensor, encoded: Encoded, dtype: str) -> dict[str, Any]:
    entry = {"dtype": dtype} if dtype != "float32" else {}
    entry.update(shape=list(tensor.shape), **encoded.describe(), crc=_crc(tensor_bits(tensor).tobytes()))
    return entry


def _ordered_streams(encoded: Encoded) -> list[bytes]:
    """The encoding's stream bytes in the order the file lays them out (its chain's roles)."""
    by_role = {stream.role: stream.data for stream in encoded.streams}
    return [by_role[role] for role in chain_roles(encoded.chain)]


def save(model: nn.Module, path: str | os.PathLike, entropy: str = "auto",
         keep_zero_sign: bool = False, encodings: dict[str, str] | None = None) -> None:
    """Write ``model`` as a .nsk file, each tensor in its cheapest exact encoding.

    Pruning by masking (``w * mask``, as ``torch.nn.utils.prune`` and every mask parametrization
    do) leaves ``-0.0`` wherever a negative weight was removed. ``-0.0 == +0.0``, and the sign of a
    zero weight never changes a nonzero output, but kept bit for bit those zeros are values the
    sparse index must store. So by default ``save`` stores every ``-0.0`` as ``+0.0``: the loaded
    model's outputs are equal (``torch.equal``) and bit-identical except possibly the sign of an
    output that is exactly zero. ``keep_zero_sign=True`` keeps every bit of every tensor.

    Args:
        model: a finalized model (no parametrizations left); zoo models are rebuilt by name at
            load time, a user's own class needs ``load(path, model=MyNet())``.
        path: where to write; written atomically.
        entropy: coder of every integer stream: ``"none"``, ``"huffman"``, ``"ans"`` or
            ``"auto"`` (the smallest).
        keep_zero_sign: store ``-0.0`` as it is instead of as ``+0.0``.
        encodings: tensor name -> chain to store it in, e.g. ``{"fc1.weight": "codebook"}`` (also
            ``"int"``, ``"binary"``, ``"dense"``, ``"float_bytes"``, ``"sparse"``,
            ``"sparse+codebook"``...); an encoding that cannot hold the tensor exactly is ignored
            and detection decides. A name the model does not have is a ConfigError.

    Example:
        >>> save(model, "lenet.nsk"); model2 = load("lenet.nsk")
    """
    if entropy != "auto" and entropy not in METHODS:
        raise ConfigError(f"unknown entropy coder {entropy!r}; choose 'auto' or one of {list(METHODS)}")
    if any(parametrize.is_parametrized(m) for m in model.modules()):
        raise NetshrinkError("the model still has parametrizations; bake them in with finalize_(model) "
                             "before saving")
    log = get_log(model)
    check_loadable(model, log)
    requested = _checked_encodings(model, encodings)
    entries: dict[str, Any] = {}
    streams: list[bytes] = []
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        if tensor.is_floating_point() and not keep_zero_sign:
            tensor = torch.where(tensor == 0, torch.zeros_like(tensor), tensor)  # -0.0 -> +0.0
        dtype = dtype_name(tensor.dtype)
        encoded = encode_tensor(tensor, entropy, requested.get(name))
        entries[name] = _tensor_entry(tensor, encoded, dtype)
        streams += _ordered_streams(encoded)
    remember_original_size(model)
    document = {"format_version": FORMAT_VERSION, "architecture": get_arch(model),
                "transform_log": log, "sections": get_sections(model), ORIGINAL_BYTES_KEY: original_size(model),
                "tensors": entries, "stream_crc": _crc(streams)}
    document = {key: value for key, value in document.items()
                if value not in (None, []) and (key != "sections" or value)}
    try:
        text = json.dumps(document, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as error:
        raise NetshrinkError(f"the transform log or architecture is not JSON-serialisable ({error})") from None
    blob = np.frombuffer(b"".join(streams), dtype=np.uint8)
    data = safetensors.numpy.save({STREAMS_KEY: blob}, metadata={METADATA_KEY: pack_document(text)})
    write_atomically(path, data)


def _checked_encodings(model: nn.Module, encodings: dict[str, str] | None) -> dict[str, str]:
    if not encodings:
        return {}
    if not isinstance(encodings, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                  for k, v in encodings.items()):
        raise ConfigError("encodings maps tensor names to chain names (strings)")
    unknown = sorted(set(encodings) - set(model.state_dict()))
    if unknown:
        raise ConfigError(f"encodings names {unknown[:3]}, which the model does not have")
    return dict(encodings)


def check_loadable(model: nn.Module, log: list[dict[str, Any]]) -> None:
    """Refuse, before anything is written, a model that ``load`` could not rebuild: a log verb
    nobody registered, or (for a zoo model) a log whose replay does not give the model's shapes."""
    try:
        check_log(log)
    except NetshrinkFormatError as error:
        raise NetshrinkError(f"cannot save: load could not rebuild this model ({error})") from None
    arch = get_arch(model)
    if arch is not None:
        from netshrink.models import check_rebuildable

        shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
        try:
            check_rebuildable(arch["name"], arch["kwargs"], shapes, log)
        except (ConfigError, NetshrinkFormatError) as error:
            raise NetshrinkError(f"cannot save: load could not rebuild this model ({error}); register "
                                 "a rebuilder for every structural change") from None


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


def _open(path: str | os.PathLike, max_params: int | None = None,
          ) -> tuple[dict[str, Any], dict[str, TensorSpec], Any]:
    """Check the outer file, parse and validate the document (elements bounded by ``max_params``,
    None: ``params_limit`` of the file size); returns the open safetensors handle."""
    size = _check_outer(path)
    try:
        handle = safe_open(os.fspath(path), framework="numpy")
        metadata = handle.metadata()
    except Exception as error:  # noqa: BLE001 (the library's own header errors)
        raise NetshrinkFormatError(f"not a valid safetensors file ({one_line(error)})") from None
    try:
        doc = parse_metadata(metadata)
        keys = list(handle.keys())
        if keys != [STREAMS_KEY]:
            raise NetshrinkFormatError(f"the file must hold exactly one tensor {STREAMS_KEY!r}, "
                                       f"it holds {sorted(keys)[:4]}")
        view = handle.get_slice(STREAMS_KEY)
        shape = view.get_shape()
        if view.get_dtype() != "U8" or len(shape) != 1:
            raise NetshrinkFormatError(f"tensor {STREAMS_KEY!r} is not a 1-D uint8 tensor")
        specs = validate_document(doc, int(shape[0]), params_limit(size) if max_params is None else max_params)
        check_log(doc["transform_log"])
    except NetshrinkFormatError:
        raise
    except Exception as error:  # noqa: BLE001 (untrusted input: any failure is a format error)
        raise NetshrinkFormatError(f"malformed file ({one_line(error)})") from None
    return doc, specs, handle


def _stream_bytes(doc: dict[str, Any], handle: Any) -> bytes:
    blob = handle.get_tensor(STREAMS_KEY).tobytes()
    if _crc(blob) != doc["stream_crc"]:
        raise NetshrinkFormatError("stream checksum mismatch (file corrupted)")
    return blob


def _streams(spec: TensorSpec, blob: bytes) -> dict[str, Stream]:
    return {role: Stream(role, blob[s.offset : s.offset + s.nbytes], s.method, s.params)
            for role, s in spec.streams.items()}


def _decoding(name: str, work):
    """Run ``work()`` on one tensor's untrusted streams; nothing but NetshrinkFormatError escapes."""
    try:
        return work()
    except NetshrinkFormatError as error:
        raise NetshrinkFormatError(f"tensor {name!r}: {one_line(error)}") from None
    except Exception as error:  # noqa: BLE001 (untrusted input: any failure is a format error)
        raise NetshrinkFormatError(f"tensor {name!r} cannot be decoded ({one_line(error)})") from None


def _decoded_bytes(specs: dict[str, TensorSpec]) -> int:
    """Peak bytes of decoding every tensor: all outputs, plus the largest one tensor's
    intermediates (they are freed before the next tensor)."""
    outputs = {name: spec.numel * itemsize(spec.dtype) for name, spec in specs.items()}
    extra = max((work_bytes(spec.chain, spec.params, spec.dtype, spec.shape) - outputs[name]
                 for name, spec in specs.items()), default=0)
    return sum(outputs.values()) + max(0, extra)


def _decode(doc: dict[str, Any], specs: dict[str, TensorSpec], handle: Any) -> dict[str, torch.Tensor]:
    """Checksum the stream bytes, then decode every tensor; nothing but NetshrinkFormatError escapes."""
    blob = _stream_bytes(doc, handle)
    tensors = {}
    for name, spec in specs.items():
        tensor = _decoding(name, lambda spec=spec: decode_streams(
            spec.chain, spec.params, _streams(spec, blob), spec.dtype, spec.shape))
        if _crc(tensor_bits(tensor).data) != spec.crc:
            raise NetshrinkFormatError(f"tensor {name!r}: checksum of the decoded tensor does not match")
        tensors[name] = tensor
    return tensors


def _refuse_above(what: str, nbytes: int, cap: int | None) -> None:
    if cap is not None and nbytes > cap:
        raise NetshrinkFormatError(f"{what} would decode to {nbytes} bytes, more than the "
                                   f"max_decoded_bytes={cap} cap (raise it to read this file)")


def read_tensors(path: str | os.PathLike, max_decoded_bytes: int | None = MAX_DECODED_BYTES,
                 max_params: int | None = None,
                 ) -> tuple[dict[str, Any], dict[str, TensorSpec], dict[str, torch.Tensor]]:
    """Validate and decode a file without building a model: ``(document, specs, tensors)``.

    A file of a few hundred bytes can declare gigabytes of all-zero tensors, so a file whose
    decoding would allocate more than ``max_decoded_bytes`` (outputs and the decoders'
    intermediates) is refused before anything is decoded (None: only the format's own 64 GiB
    bound), as is one declaring more than ``max_params`` elements (None: ``params_limit`` of the
    file size, see ``validate``)."""
    doc, specs, handle = _open(path, max_params)
    _refuse_above("the file's tensors", _decoded_bytes(specs), max_decoded_bytes)
    return doc, specs, _decode(doc, specs, handle)


def read_kept(path: str | os.PathLike, max_decoded_bytes: int | None = MAX_DECODED_BYTES,
              max_params: int | None = None,
              ) -> tuple[dict[str, Any], dict[str, TensorSpec], dict[str, int]]:
    """Validate a file and count each tensor's nonzero elements: ``(document, specs, kept)``.

    Tensors are decoded one at a time and dropped; a sparse tensor is never expanded (its entries
    are counted and its checksum is computed a slice at a time), so memory is bounded by the
    largest non-sparse tensor or sparse entry list, each refused above ``max_decoded_bytes``;
    ``max_params`` as in ``read_tensors``."""
    doc, specs, handle = _open(path, max_params)
    blob = _stream_bytes(doc, handle)
    kept = {}
    for name, spec in specs.items():
        size = itemsize(spec.dtype)
        if spec.chain[0] == "sparse":
            _refuse_above(f"tensor {name!r}'s entries", spec.params["sparse"]["entries"] * size,
                          max_decoded_bytes)
            kept[name], crc = _decoding(name, lambda spec=spec: sparse_kept_and_crc(
                spec.chain, spec.params, _streams(spec, blob), spec.dtype, spec.numel))
        else:
            _refuse_above(f"tensor {name!r}", work_bytes(spec.chain, spec.params, spec.dtype, spec.shape),
                          max_decoded_bytes)
            bits = tensor_bits(_decoding(name, lambda spec=spec: decode_streams(
                spec.chain, spec.params, _streams(spec, blob), spec.dtype, spec.shape)))
            kept[name], crc = int(np.count_nonzero(bits)), _crc(bits.data)
            del bits
        if crc != spec.crc:
            raise NetshrinkFormatError(f"tensor {name!r}: checksum of the decoded tensor does not match")
    return doc, specs, kept


def _build(doc: dict[str, Any], specs: dict[str, TensorSpec], max_elements: int) -> nn.Module:
    """The zoo model the file names, with its logged structural changes replayed; checked against
    the file's tensors on the ``meta`` device before anything is allocated (``create_matching``)."""
    arch = doc["architecture"]
    if arch is None:
        raise NetshrinkFormatError("this file holds a user-defined model; build it yourself and "
                                   "pass it: load(path, model=MyNet())")
    from netshrink.models import create_matching

    try:
        return create_matching(arch["name"], arch["kwargs"],
                               {name: tuple(spec.shape) for name, spec in specs.items()},
                               doc["transform_log"], max_elements)
    except ConfigError as error:
        raise NetshrinkFormatError(f"the file does not fit its architecture: {error}") from None


def _replayed(model: nn.Module, log: list[dict[str, Any]]) -> nn.Module:
    try:
        return replay(model, log)
    except NetshrinkFormatError:
        raise
    except Exception as error:  # noqa: BLE001 (records come from the file)
        raise NetshrinkFormatError(f"replaying the transform log failed ({one_line(error)})") from None


def _mismatch(model: nn.Module, specs: dict[str, TensorSpec]) -> str | None:
    """Why the model's state dict does not match the file (None if it does)."""
    state = model.state_dict()
    missing, extra = sorted(set(specs) - set(state)), sorted(set(state) - set(specs))
    if missing or extra:
        return f"state dict keys differ: file-only {missing[:3]}, model-only {extra[:3]}"
    for name, spec in specs.items():
        tensor = state[name]
        same_kind = dtype_name(tensor.dtype) == spec.dtype or (
            tensor.is_floating_point() and spec.dtype in FLOAT_DTYPES)  # a cast model loads as saved
        if list(tensor.shape) != spec.shape or not same_kind:
            return (f"tensor {name!r} is {spec.dtype}{spec.shape} in the file but "
                    f"{tensor.dtype}{list(tensor.shape)} in the model")
    return None


def load(path: str | os.PathLike, model: nn.Module | None = None, max_params: int | None = None) -> nn.Module:
    """Read a .nsk file into a model in eval mode whose outputs equal the saved model's bit for bit.

    Args:
        path: the file.
        model: for a user's own class, a fresh instance of it (the file's transform log is
            replayed on it), or the transformed model itself carrying the same log (used as it
            is); zoo models are rebuilt from the file when omitted.
        max_params: refuse a file declaring more elements than this, before any model is built.
            None: ``validate.params_limit`` of the file size (1024 elements per byte, at least
            2**24), which only a file of huge constant or all-zero tensors exceeds; raise it to
            load such a file you trust.

    Raises:
        NetshrinkFormatError: with a one-line reason for any invalid, corrupted or mismatching file.
    """
    doc, specs, handle = _open(path, max_params)
    if model is None:
        model = _build(doc, specs, params_limit(os.path.getsize(path)) if max_params is None else max_params)
    elif get_log(model) != doc["transform_log"]:
        # a fresh instance: redo the logged changes, structural ones and those that live outside
        # the weights (activation hooks), even where the shapes already fit
        model = _replayed(model, doc["transform_log"])
    reason = _mismatch(model, specs)
    if reason is not None:
        raise NetshrinkFormatError(f"the file does not fit the model: {reason}")
    # the model holds every declared element, so what is decoded is bounded by the model itself
    tensors = _decode(doc, specs, handle)
    _cast_to(model, {name: tensor.dtype for name, tensor in tensors.items()})
    model.load_state_dict(tensors, strict=True)  # copying keeps tied parameters tied
    set_log(model, doc["transform_log"])
    for name, value in doc["sections"].items():
        set_section(model, name, value)
    set_original_size(model, doc[ORIGINAL_BYTES_KEY])
    arch = doc["architecture"]
    if arch is not None:
        set_arch(model, arch["name"], arch["kwargs"])
    return model.eval()


def _cast_to(model: nn.Module, dtypes: dict[str, torch.dtype]) -> None:
    """Give every parameter and buffer the dtype the file stores it in (a model saved in fp16 loads
    as fp16 into a fresh fp32 instance). A parameter keeps its identity (its ``.data`` is
    replaced) and a buffer is replaced by one new tensor wherever it is registered, each once, so
    tied weights stay tied."""
    targets: dict[int, torch.dtype] = {}
    tensors: dict[int, torch.Tensor] = {}
    for name, tensor in [*model.named_parameters(remove_duplicate=False),
                         *model.named_buffers(remove_duplicate=False)]:
        dtype = dtypes.get(name)
        if tensor is not None and dtype is not None and tensor.dtype != dtype:
            targets.setdefault(id(tensor), dtype)
            tensors[id(tensor)] = tensor
    if not targets:
        return
    replaced: dict[int, torch.Tensor] = {}
    for key, tensor in tensors.items():
        with torch.no_grad():
            cast = tensor.detach().to(targets[key])
        if isinstance(tensor, nn.Parameter):
            tensor.data = cast
        else:
            replaced[key] = cast
    for module in model.modules():
        for name, buffer in module._buffers.items():
            if buffer is not None and id(buffer) in replaced:
                module._buffers[name] = replaced[id(buffer)]
