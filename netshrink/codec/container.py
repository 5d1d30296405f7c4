"""The .nsk compressed model file: ``save(model, path)`` and ``load(path) -> nn.Module``.

Outer file: safetensors (no pickle; its header is validated by its own parser). Inside, one 1-D
uint8 tensor ``"streams"`` holding every encoded stream end to end (zero-length for a model
without any stream bytes), and one string metadata entry ``"netshrink"`` holding a compact JSON
document, deflated when that is shorter (``document``; format version 6; versions 2 to 5 are read
too)::

    {"format_version": 6,
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
                        "crc": CRC-32 of the decoded tensor},
                 later name of a tied tensor: {"alias": its first name}}}

Streams follow one another in document order of the tensors, and within a tensor in the role order
of its chain (``encodings.chain_roles``), so offsets are implied by the lengths. Only coded streams
(entropy-coded symbols, float planes) are declared; a raw byte stream (``raw``, ``codebook``,
``row_values``) has the one length its shape and params allow. ``chain`` is the encoding (each
a unit of ``netshrink.codec.encodings``); ``crc`` is over the decoded tensor's raw little-endian
bytes. Versions 2 to 4 also carry ``"stream_crc"``, a CRC-32 of all the stream bytes; version 5
drops it (it cost a second pass over the file, and each tensor's CRC covers its bytes) and is
written a tensor at a time (``stream_file``). Version 6 stores a Huffman stream's code lengths as
one character each (``huffman.LENGTH_DIGITS``) instead of a JSON list of numbers.

Tied tensors (state-dict entries that are one tensor: same storage, offset, shape, stride and
dtype, as a language model's output layer tied to its token embedding) are written once, under
their first name; each later name is an alias entry with no streams of its own (``validate``
checks that it names an earlier stored tensor). ``load`` decodes the tensor once and fills every
alias from it: a model whose weights are tied keeps them tied, one that is not gets a copy.

Streaming: ``save`` encodes one tensor, writes its streams and drops them before the next, and
``load`` decodes one tensor at a time straight into the model's parameter or buffer (a dense
tensor is read from the file into the parameter's memory: one copy), so neither holds more than
one tensor's encoding beside the model, whatever the file's size. bf16 and fp16 tensors are
encoded, written and read in their own dtype.

Effort: ``save(..., effort="default")`` decides each large tensor's encoding on a sample of it
and keeps a compressed encoding only where the sample shows it saving at least a quarter of the
raw bytes (``tensor_encodings.MIN_SAVING``): so a dense fp32 tensor is stored raw (its exponent
plane would save about 16% but decode at tens of megabytes a second; a whole tensor takes float
planes only in 16-bit floats, ``PLANES_MAX_ITEMSIZE``, whatever an fp32 one would save), while bf16/fp16
float planes, pruned, clustered, quantized and binary tensors are coded as before. ``effort="max"``
tries every encoding on every whole tensor, as versions up to 4 did: the smallest file.

Durability: ``save`` fsyncs the file before renaming it into place (``core.files``); ``load``
reads through the page cache.

The loader validates everything (``validate``), bounds the declared elements by ``max_params``
(by default by the file's counted bytes, so a small file cannot make it build or fill a huge
model) and what it allocates by the budget they give (``reading.OpenedFile.budget``: the model
built and its log replayed, summed over every step; the decoding and any cast copies), rebuilds
the architecture from the zoo and the transform log (``netshrink.core.rebuild``) or takes the
caller's model, and checks that the state dict matches; every failure is one
``NetshrinkFormatError``.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from netshrink.codec.crc import crc32
from netshrink.codec.document import pack_document
from netshrink.codec.entropy import METHODS
from netshrink.codec.reading import (
    MAX_DECODED_BYTES,
    OpenedFile,
    check_crc,
    decode_peak,
    decode_tensor,
    open_file,
    read_kept,
    read_tensors,
    refuse_above,
)
from netshrink.codec.stream_file import StreamWriter
from netshrink.codec.tensor_encodings import (
    DTYPES,
    EFFORTS,
    FLOAT_DTYPES,
    Encoded,
    chain_roles,
    dtype_name,
    encode_tensor,
    itemsize,
    tensor_bits,
)
from netshrink.codec.validate import (
    ALIAS_KEY,
    FORMAT_VERSION,
    METADATA_KEY,
    ORIGINAL_BYTES_KEY,
    STREAMS_KEY,
    TensorSpec,
    params_limit,
)
from netshrink.core.errors import ConfigError, NetshrinkError, NetshrinkFormatError, one_line
from netshrink.core.rebuild import Budget, check_log, meta_shadow, replay
from netshrink.core.registry import stored_encodings
from netshrink.core.transform_log import get_arch, get_log, get_sections, set_arch, set_log, set_section
from netshrink.measure.size import original_size, remember_original_size, set_original_size

__all__ = ["MAX_DECODED_BYTES", "check_loadable", "load", "read_kept", "read_tensors", "save"]

#: header bytes reserved per tensor before the streams are written (a dense tensor's entry is
#: about 60; a larger header moves the streams up once, ``stream_file``)
HEADER_BYTES_PER_TENSOR = 160


def _ordered_streams(encoded: Encoded) -> list[Any]:
    """The encoding's stream bytes in the order the file lays them out (its chain's roles)."""
    by_role = {stream.role: stream.data for stream in encoded.streams}
    return [by_role[role] for role in chain_roles(encoded.chain)]


def _stored(tensor: torch.Tensor, keep_zero_sign: bool) -> torch.Tensor:
    """The tensor as it is stored: on the CPU, contiguous, each ``-0.0`` made ``+0.0`` unless kept
    (a copy only when the tensor holds one)."""
    tensor = tensor.detach().cpu().contiguous()
    if tensor.is_floating_point() and not keep_zero_sign:
        bits = tensor_bits(tensor)
        if bool(np.any(bits == np.iinfo(bits.dtype).min)):  # the sign bit alone: -0.0
            tensor = torch.where(tensor == 0, torch.zeros((), dtype=tensor.dtype), tensor)
    return tensor


def _document_text(document: dict[str, Any]) -> str:
    document = {key: value for key, value in document.items()
                if value not in (None, []) and (key != "sections" or value)}
    try:
        return json.dumps(document, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as error:
        raise NetshrinkError(f"the transform log or architecture is not JSON-serialisable ({error})") from None


def save(model: nn.Module, path: str | os.PathLike, entropy: str = "auto",
         keep_zero_sign: bool = False, encodings: dict[str, str] | None = None, effort: str = "default") -> None:
    """Write ``model`` as a .nsk file, each tensor in an exact encoding, a tensor at a time.

    Pruning by masking (``w * mask``, as ``torch.nn.utils.prune`` and every mask parametrization
    do) leaves ``-0.0`` wherever a negative weight was removed. ``-0.0 == +0.0``, and the sign of a
    zero weight never changes a nonzero output, but kept bit for bit those zeros are values the
    sparse index must store. So by default ``save`` stores every ``-0.0`` as ``+0.0``: the loaded
    model's outputs are equal (``torch.equal``) and bit-identical except possibly the sign of an
    output that is exactly zero. ``keep_zero_sign=True`` keeps every bit of every tensor.

    Args:
        model: a finalized model (no parametrizations left); zoo models are rebuilt by name at
            load time, a user's own class needs ``load(path, model=MyNet())``.
        path: where to write; written atomically and fsync-ed (see the module docstring).
        entropy: coder of every integer stream: ``"none"``, ``"huffman"``, ``"ans"`` or
            ``"auto"`` (the smallest).
        keep_zero_sign: store ``-0.0`` as it is instead of as ``+0.0``.
        encodings: tensor name -> chain to store it in, e.g. ``{"fc1.weight": "codebook"}`` (also
            ``"int"``, ``"group_int"``, ``"group_fmin"``, ``"binary"``, ``"dense"``, ``"float_bytes"``, ``"sparse"``,
            ``"sparse+codebook"``...); an encoding that cannot hold the tensor exactly is ignored
            and detection decides. A name the model does not have is a ConfigError.
        effort: ``"default"`` (each large tensor's encoding decided on a sample; dense fp32 is
            stored raw, fast to write and read, and a wide float is searched for integer grids only
            where the technique that made them says so, ``Technique.stored_as``) or ``"max"``
            (every encoding tried on every tensor: the smallest file, as before format 5; a model
            quantized elsewhere and dequantized to fp32 is stored on its grids only here). See the
            module docstring.

    Example:
        >>> save(model, "lenet.nsk"); model2 = load("lenet.nsk")
    """
    if entropy != "auto" and entropy not in METHODS:
        raise ConfigError(f"unknown entropy coder {entropy!r}; choose 'auto' or one of {list(METHODS)}")
    if effort not in EFFORTS:
        raise ConfigError(f"unknown effort {effort!r}; choose one of {list(EFFORTS)}")
    if any(parametrize.is_parametrized(m) for m in model.modules()):
        raise NetshrinkError("the model still has parametrizations; bake them in with finalize_(model) "
                             "before saving")
    log = get_log(model)
    check_loadable(model, log)
    # the techniques' words spare the default effort a search; effort max searches every encoding anyway
    hinted = stored_encodings(model, log) if effort == "default" else {}
    requested = {**hinted, **_checked_encodings(model, encodings)}
    remember_original_size(model)
    document = {"format_version": FORMAT_VERSION, "architecture": get_arch(model),
                "transform_log": log, "sections": get_sections(model), ORIGINAL_BYTES_KEY: original_size(model)}
    known = _document_text(document)  # refuses a log that is not JSON before anything is written
    state = model.state_dict()
    keys = {name: _storage_key(tensor) for name, tensor in state.items()}
    shared_words = {keys[name]: chain for name, chain in requested.items() if keys.get(name) is not None}
    for name, key in keys.items():  # a tied tensor is written under its first name: any name's word holds
        if name not in requested and key in shared_words:
            requested[name] = shared_words[key]
    entries: dict[str, Any] = {}
    stored: dict[tuple[Any, ...], str] = {}  # storage key -> the name it was written under
    with StreamWriter(path, STREAMS_KEY, reserve=len(known) + HEADER_BYTES_PER_TENSOR * len(state)) as writer:
        for name, tensor in state.items():
            key = keys[name]
            if key in stored:
                entries[name] = {ALIAS_KEY: stored[key]}
                continue
            if key is not None:
                stored[key] = name
            tensor = _stored(tensor, keep_zero_sign)
            encoded = encode_tensor(tensor, entropy, requested.get(name), effort)
            crcs = [writer.write(data) for data in _ordered_streams(encoded)]
            entry = {"dtype": dtype_name(tensor.dtype)} if tensor.dtype != torch.float32 else {}
            crc = crcs[0] if encoded.chain == ["dense"] else crc32(tensor_bits(tensor).data)
            entries[name] = {**entry, "shape": list(tensor.shape), **encoded.describe(), "crc": crc}
            del encoded, tensor
        writer.finish({METADATA_KEY: pack_document(_document_text({**document, "tensors": entries}))})


def _storage_key(tensor: torch.Tensor) -> tuple[Any, ...] | None:
    """What makes two state-dict entries one tensor (tied weights): the same memory viewed the same
    way; None for an empty tensor (its storage may be anything)."""
    if tensor.numel() == 0:
        return None
    return (tensor.device, tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape),
            tuple(tensor.stride()), tensor.dtype)


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


def _build(doc: dict[str, Any], specs: dict[str, TensorSpec], max_elements: int, budget: Budget) -> nn.Module:
    """The zoo model the file names, with its logged structural changes replayed; checked against
    the file's tensors and ``budget`` on the ``meta`` device before anything is allocated
    (``create_matching``)."""
    arch = doc["architecture"]
    if arch is None:
        raise NetshrinkFormatError("this file holds a user-defined model; build it yourself and "
                                   "pass it: load(path, model=MyNet())")
    from netshrink.models import create_matching

    try:
        return create_matching(arch["name"], arch["kwargs"],
                               {name: tuple(spec.shape) for name, spec in specs.items()},
                               doc["transform_log"], max_elements, budget)
    except ConfigError as error:
        raise NetshrinkFormatError(f"the file does not fit its architecture: {one_line(error)}") from None


def _replayed(model: nn.Module, log: list[dict[str, Any]], budget: Budget) -> nn.Module:
    """``log`` replayed on a caller's model: first on a ``meta`` copy of it, with the layers the
    rebuilders make built on ``meta`` too (no memory), so a log passing ``budget`` is refused
    before the real replay allocates anything; then for real."""
    try:
        shadow = meta_shadow(model)
        if shadow is not None:
            with torch.device("meta"):
                replay(shadow, log, budget)
        return replay(model, log, budget)
    except NetshrinkFormatError:
        raise
    except Exception as error:  # noqa: BLE001 (records come from the file)
        raise NetshrinkFormatError(f"replaying the transform log failed ({one_line(error)})") from None


def _mismatch(model: nn.Module, specs: dict[str, TensorSpec]) -> str | None:
    """Why the model's state dict does not match the file (None if it does)."""
    state = model.state_dict(keep_vars=True)
    missing, extra = sorted(set(specs) - set(state)), sorted(set(state) - set(specs))
    if missing or extra:
        return (f"state dict keys differ: file-only {[name[:80] for name in missing[:3]]}, "
                f"model-only {[name[:80] for name in extra[:3]]}")
    for name, spec in specs.items():
        tensor = state[name]
        if not isinstance(tensor, torch.Tensor):
            return f"state dict entry {name[:80]!r} of the model is not a tensor"
        same_kind = dtype_name(tensor.dtype) == spec.dtype or (
            tensor.is_floating_point() and spec.dtype in FLOAT_DTYPES)  # a cast model loads as saved
        if list(tensor.shape) != spec.shape or not same_kind:
            return (f"tensor {name[:80]!r} is {spec.dtype}{spec.shape} in the file but "
                    f"{tensor.dtype}{list(tensor.shape)} in the model")
    return None


def _targets(model: nn.Module, specs: dict[str, TensorSpec]) -> dict[str, torch.Tensor]:
    """Every parameter and buffer the file holds, by its state-dict name, tied ones under each
    name: one pass over the modules (``nn.Module.load_state_dict`` scans every key once per
    module: quadratic). Non-persistent buffers are not in the file and are left as they are."""
    return {name: tensor for name, tensor in [*model.named_parameters(remove_duplicate=False),
                                               *model.named_buffers(remove_duplicate=False)]
            if tensor is not None and name in specs}


def _cast_bytes(targets: dict[str, torch.Tensor], specs: dict[str, TensorSpec]) -> int:
    """Bytes of the new tensors ``_retype`` makes: each tensor (tied ones once) whose dtype the
    file's differs from, in the file's dtype."""
    seen: dict[int, int] = {}
    for name, tensor in targets.items():
        spec = specs[name]
        if dtype_name(tensor.dtype) != spec.dtype:
            seen[id(tensor)] = tensor.numel() * itemsize(spec.dtype)
    return sum(seen.values())


def _retype(model: nn.Module, specs: dict[str, TensorSpec]) -> None:
    """Give every parameter and buffer the dtype the file stores it in (a model saved in fp16 loads
    as fp16 into a fresh fp32 instance), as new empty tensors (the file fills them). A parameter
    keeps its identity (its ``.data`` is replaced) and a buffer is replaced by one new tensor
    wherever it is registered, each once, so tied weights stay tied."""
    replaced: dict[int, torch.Tensor] = {}
    for name, tensor in _targets(model, specs).items():
        dtype = DTYPES[specs[name].dtype]
        if tensor.dtype == dtype or id(tensor) in replaced:
            continue
        replaced[id(tensor)] = fresh = torch.empty(tensor.shape, dtype=dtype, device=tensor.device)
        if isinstance(tensor, nn.Parameter):
            tensor.data = fresh
    for module in model.modules():
        for name, buffer in module._buffers.items():
            if buffer is not None and id(buffer) in replaced:
                module._buffers[name] = replaced[id(buffer)]


def _byte_view(tensor: torch.Tensor) -> memoryview | None:
    """The tensor's memory as bytes to read a dense stream into, or None where it cannot be (not
    on the CPU, not contiguous, or a big-endian machine)."""
    if tensor.device.type != "cpu" or not tensor.is_contiguous() or sys.byteorder != "little":
        return None
    return memoryview(tensor.detach().reshape(-1).view(torch.uint8).numpy())


def _same_memory(one: torch.Tensor, other: torch.Tensor) -> bool:
    return (one.device == other.device and one.data_ptr() == other.data_ptr() and one.shape == other.shape
            and one.stride() == other.stride() and one.dtype == other.dtype)


def _fill(opened: OpenedFile, targets: dict[str, torch.Tensor]) -> None:
    """Decode each tensor straight into the parameter or buffer of its name, one at a time: a
    dense stream is read into its memory, any other decoded and copied in, then dropped; an alias
    copied from its target unless the model ties them."""
    for name, spec in opened.specs.items():
        target = targets[name]
        if spec.alias is not None:  # filled from its target, already decoded: nothing when tied
            source = targets[spec.alias]
            if not _same_memory(target, source):
                with torch.no_grad():
                    target.copy_(source)
            continue
        view = _byte_view(target) if spec.chain == ["dense"] else None
        if view is not None:
            check_crc(spec, opened.reader.read_into(spec.streams["raw"].offset, view))
            continue
        decoded = decode_tensor(opened, spec)
        with torch.no_grad():
            target.copy_(decoded)
        del decoded


def load(path: str | os.PathLike, model: nn.Module | None = None, max_params: int | None = None) -> nn.Module:
    """Read a .nsk file into a model in eval mode whose outputs equal the saved model's bit for bit.

    Tensors are decoded one at a time straight into the model's parameters and buffers (see the
    module docstring); if the file turns out corrupt part way, a ``model`` passed in may be
    partly filled.

    Args:
        path: the file.
        model: for a user's own class, a fresh instance of it (the file's transform log is
            replayed on it), or the transformed model itself carrying the same log (used as it
            is); zoo models are rebuilt from the file when omitted.
        max_params: refuse a file declaring more elements than this, before any model is built.
            None: ``validate.params_limit`` of the file's counted bytes (1024 elements per byte, at
            least 2**24), which only a file of huge constant or all-zero tensors exceeds; raise it
            to load such a file you trust. It also sets what the load may allocate: the model
            built and its log replayed (summed over every step), the decoding and any cast
            copies, within ``validate.bytes_limit`` of the counted bytes by default, else
            ``8 * max_params`` bytes.

    Raises:
        NetshrinkFormatError: with a one-line reason for any invalid, corrupted or mismatching file.
    """
    with open_file(path, max_params) as opened:
        try:
            return _load_opened(opened, model, max_params)
        except NetshrinkFormatError:
            raise
        except Exception as error:  # noqa: BLE001 (everything after opening: a bad file is one format error)
            raise NetshrinkFormatError(f"cannot load the file ({one_line(error)})") from None


def _load_opened(opened: OpenedFile, model: nn.Module | None, max_params: int | None) -> nn.Module:
    doc, specs = opened.doc, opened.specs
    budget = opened.budget(max_params)
    if model is None:
        model = _build(doc, specs, params_limit(opened.limits.counted_bytes) if max_params is None else max_params,
                       budget)
    elif get_log(model) != doc["transform_log"]:
        # a fresh instance: redo the logged changes, structural ones and those that live outside
        # the weights (activation hooks), even where the shapes already fit
        model = _replayed(model, doc["transform_log"], budget)
    reason = _mismatch(model, specs)
    if reason is not None:
        raise NetshrinkFormatError(f"the file does not fit the model: {reason}")
    # the model holds every declared element; decoding one tensor at a time and retyping add this
    refuse_above("one tensor's decoding with the retyped copies", decode_peak(specs) + _cast_bytes(
        _targets(model, specs), specs), budget.bytes, "max_params")
    opened.check_stream_crc()
    _retype(model, specs)
    _fill(opened, _targets(model, specs))
    set_log(model, doc["transform_log"])
    for name, value in doc["sections"].items():
        set_section(model, name, value)
    set_original_size(model, doc[ORIGINAL_BYTES_KEY])
    arch = doc["architecture"]
    if arch is not None:
        set_arch(model, arch["name"], arch["kwargs"])
    return model.eval()
