"""4-bit ONNX files that run in 4 bits: GPTQ's grids written as ONNX Runtime ``MatMulNBits`` blocks.

``export_int4(model, path, inputs)`` takes a Hugging Face text model whose Linear layers carry
netshrink's 4-bit group grids (``quantize_(model, GPTQ(bits=4, group_size=128, ...))``, before
``finalize_``) and writes an ONNX file in which

- every such layer's ``MatMul`` is ONNX Runtime's ``MatMulNBits`` (``com.microsoft``; 4-bit codes
  packed two to a byte per output column and block of ``group_size`` inputs, an fp32 scale and a
  packed 4-bit zero point per block): GPTQ's own integer codes and grids, not a re-quantization;
- the word-embedding table is ``GatherBlockQuantized`` (``com.microsoft``; a ``uint4`` table with
  one affine min-max grid per ``embedding_block`` values of a row, netshrink's ``calibrate``).

The packing follows ``onnxruntime.quantization.matmul_nbits_quantizer`` (its public
``DefaultWeightOnlyQuantizer.pack_int8_to_int4``: low nibble first, row-major) and the operator
specs in ONNX Runtime's ContribOperators.md. How it is built: the model is copied, its grids
baked (``finalize_``) and its embedding table rounded to its grid, so the copy computes exactly what
the 4-bit file should; that copy is exported (``onnx_tokens``), each grid layer's weight is found in
the graph by value (its transposed matrix is a ``MatMul`` initializer) and its node replaced. ONNX
Runtime then runs the file on ``inputs`` and its outputs must match the copy's (the same
fake-quantized weights) within ``INT4_TOLERANCE`` of the largest output, else nothing is written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from netshrink.core.errors import ConfigError
from netshrink.quant.calibration import calibrate
from netshrink.quant.uniform import FakeQuantize

#: int4 tensor types (``GatherBlockQuantized``'s ``uint4`` table) entered ONNX at opset 21
MIN_INT4_OPSET = 21
#: values of an embedding row per grid (a power of two >= 16, as ``GatherBlockQuantized`` needs)
EMBEDDING_BLOCK = 32
#: largest ONNX Runtime vs fake-quantized PyTorch difference accepted, relative to the largest output
INT4_TOLERANCE = 1e-3
MS_DOMAIN = "com.microsoft"


@dataclasses.dataclass(frozen=True)
class Int4Export:
    """What ``export_int4`` wrote: layers as ``MatMulNBits``, the embedding as ``GatherBlockQuantized``
    (or not), and the largest difference from the fake-quantized PyTorch model (relative)."""

    matmul_nbits: int
    embedding: bool
    difference: float


def _pack(codes: np.ndarray) -> np.ndarray:
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantizer

    return DefaultWeightOnlyQuantizer.pack_int8_to_int4(codes.astype(np.uint8))


def _block_size(value: int, what: str) -> int:
    if value < 16 or value & (value - 1):
        raise ConfigError(f"{what} is {value}; ONNX Runtime's 4-bit blocks need a power of two >= 16 "
                          "(quantize with group_size 32, 64 or 128)")
    return value


def int4_grids(model: nn.Module) -> dict[str, FakeQuantize]:
    """The Linear layers whose weight carries a grid of at most 4 bits with groups, by name."""
    grids = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and parametrize.is_parametrized(module, "weight"):
            grid = next((p for p in module.parametrizations.weight if isinstance(p, FakeQuantize)), None)
            if grid is not None and grid.qmax - grid.qmin <= 15:
                if not grid.group_size:
                    raise ConfigError(f"layer {name!r} has one grid per channel; MatMulNBits needs group grids "
                                      "(quantize with GPTQ(bits=4, group_size=128))")
                _block_size(grid.group_size, f"layer {name!r}'s group size")
                grids[name] = grid
    return grids


def _codes(weight: torch.Tensor, grid: FakeQuantize) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(codes (N, K), scales (N, K / group), zero points (N, K / group))`` of a weight on its
    grid, shifted to ``0..15`` (a signed grid's codes and zero points move up by ``-qmin``)."""
    rows, columns = weight.shape
    scale = grid.scale.reshape(rows, -1).float()
    zero = grid.zero_point.reshape(rows, -1).to(torch.int64)
    groups = weight.detach().float().reshape(rows, -1, grid.group_size)
    codes = torch.clamp(torch.round(groups / scale[..., None]) + zero[..., None], grid.qmin, grid.qmax)
    shift = -grid.qmin
    return ((codes.reshape(rows, columns) + shift).to(torch.uint8).numpy(), scale.numpy(),
            (zero + shift).clamp(0, 15).to(torch.uint8).numpy())


def _digest(array: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(array, dtype=np.float32).tobytes()).hexdigest()


def _round_embedding_(embedding: nn.Embedding, block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Round the table to 4-bit affine min-max grids, one per ``block`` values of a row (in place);
    returns its ``(codes, scales, zero points)`` shaped ``(V, H)``, ``(V, H / block)`` twice."""
    weight = embedding.weight.detach()
    vocab, width = weight.shape
    if width % block:
        raise ConfigError(f"the embedding width {width} is not a multiple of the {block}-value block; "
                          "choose a block that divides it")
    rows = weight.reshape(-1, block)
    grid = calibrate(rows, 4, "affine", True, "minmax")
    codes = torch.clamp(torch.round(rows / grid.scale[:, None]) + grid.zero_point[:, None], grid.qmin, grid.qmax)
    with torch.no_grad():
        embedding.weight.copy_(((codes - grid.zero_point[:, None]) * grid.scale[:, None]).reshape(vocab, width))
    shift = -grid.qmin
    return ((codes + shift).to(torch.uint8).reshape(vocab, width).numpy(),
            grid.scale.reshape(vocab, -1).numpy().astype(np.float32),
            (grid.zero_point + shift).to(torch.uint8).reshape(vocab, -1).numpy())


def _initializers(graph) -> dict[str, object]:
    return {init.name: init for init in graph.initializer}


def nbits_initializers(prefix: str, codes: np.ndarray, scales: np.ndarray, zeros: np.ndarray, block: int) -> list:
    """A ``MatMulNBits`` node's ``{prefix}_q4``, ``{prefix}_scales`` and ``{prefix}_zero_points``
    initializers for 4-bit ``codes`` ``(N, K)`` with ``scales`` / ``zeros`` ``(N, K / block)``: codes
    ``(N, blocks, block / 2)`` bytes, fp32 scales, zero points packed per row (a row's odd block
    count padded with one nibble)."""
    from onnx import numpy_helper

    n, k = codes.shape
    blocks = k // block
    return [numpy_helper.from_array(_pack(codes).reshape(n, blocks, block // 2), f"{prefix}_q4"),
            numpy_helper.from_array(scales.reshape(-1).astype(np.float32), f"{prefix}_scales"),
            numpy_helper.from_array(_pack(np.pad(zeros, ((0, 0), (0, blocks % 2)))), f"{prefix}_zero_points")]


def _replace_matmuls(graph, layers: dict[str, tuple]) -> int:
    """Each ``MatMul`` whose weight is a grid layer's (transposed) becomes ``MatMulNBits``."""
    from onnx import helper, numpy_helper

    inits = _initializers(graph)
    by_digest = {digest: name for name, (digest, *_) in layers.items()}
    replaced, used = 0, set()
    for index, node in enumerate(list(graph.node)):
        if node.op_type != "MatMul" or node.input[1] not in inits:
            continue
        init = inits[node.input[1]]
        if len(init.dims) != 2:
            continue
        name = by_digest.get(_digest(numpy_helper.to_array(init)))
        if name is None:
            continue
        _, codes, scales, zeros, block = layers[name]
        n, k = codes.shape
        prefix = f"{init.name}_nbits"
        graph.initializer.extend(nbits_initializers(prefix, codes, scales, zeros, block))
        new = helper.make_node("MatMulNBits", [node.input[0], f"{prefix}_q4", f"{prefix}_scales",
                                               f"{prefix}_zero_points"], list(node.output),
                               name=f"{node.name or prefix}_nbits", domain=MS_DOMAIN, K=k, N=n, bits=4,
                               block_size=block)
        graph.node.remove(node)
        graph.node.insert(index, new)
        used.add(init.name)
        replaced += 1
    _drop_unused(graph, used)
    return replaced


def _replace_gather(graph, weight_digest: str, codes: np.ndarray, scales: np.ndarray, zeros: np.ndarray,
                    block: int) -> bool:
    """The ``Gather`` from the embedding table becomes ``GatherBlockQuantized`` on a uint4 table."""
    from onnx import TensorProto, helper, numpy_helper

    inits = _initializers(graph)
    for index, node in enumerate(list(graph.node)):
        if node.op_type != "Gather" or node.input[0] not in inits:
            continue
        init = inits[node.input[0]]
        if len(init.dims) != 2 or _digest(numpy_helper.to_array(init)) != weight_digest:
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        prefix = f"{init.name}_q4"
        graph.initializer.extend([
            helper.make_tensor(prefix, TensorProto.UINT4, codes.shape, _pack(codes).tobytes(), raw=True),
            numpy_helper.from_array(scales, f"{prefix}_scales"),
            helper.make_tensor(f"{prefix}_zero_points", TensorProto.UINT4, zeros.shape, _pack(zeros).tobytes(),
                               raw=True)])
        new = helper.make_node("GatherBlockQuantized", [prefix, node.input[1], f"{prefix}_scales",
                                                        f"{prefix}_zero_points"], list(node.output),
                               name=f"{node.name or prefix}_q4", domain=MS_DOMAIN, gather_axis=axis,
                               quantize_axis=1, block_size=block)
        graph.node.remove(node)
        graph.node.insert(index, new)
        _drop_unused(graph, {init.name})
        return True
    return False


def _drop_unused(graph, names: set[str]) -> None:
    """Remove the initializers in ``names`` that no node reads any more."""
    read = {name for node in graph.node for name in node.input}
    for init in [i for i in graph.initializer if i.name in names and i.name not in read]:
        graph.initializer.remove(init)


def export_int4(model: nn.Module, path: str | os.PathLike, inputs: Mapping[str, torch.Tensor],
                embedding_block: int | None = EMBEDDING_BLOCK, opset: int = MIN_INT4_OPSET) -> Int4Export:
    """Write ``model`` (a text model with 4-bit group grids, not finalized) as a 4-bit ONNX file at
    ``path``: ``MatMulNBits`` per grid layer, ``GatherBlockQuantized`` for the word embeddings
    (``embedding_block`` values per grid; None keeps them fp32). ``model`` is left unchanged."""
    import onnx

    from netshrink.quant.onnx_export import replace_when_close
    from netshrink.quant.onnx_tokens import (
        _no_cache,
        check_token_batch,
        export_token_model,
        output_field,
    )

    if isinstance(opset, bool) or not isinstance(opset, int) or opset < MIN_INT4_OPSET:
        raise ConfigError(f"opset {opset} is too old for int4: MatMulNBits with a uint4 embedding table needs "
                          f"opset >= {MIN_INT4_OPSET}")
    batch = check_token_batch(inputs)
    grids = int4_grids(model)
    if not grids:
        raise ConfigError("no Linear layer carries a 4-bit group grid; quantize first, e.g. quantize_(model, "
                          "GPTQ(bits=4, group_size=128, calibration_data=batch)), and export before finalize_")
    modules = dict(model.named_modules())
    layers = {name: [None, *_codes(modules[name].weight, grid), grid.group_size] for name, grid in grids.items()}
    reference, table = int4_reference(model, embedding_block)
    modules = dict(reference.named_modules())
    for name, entry in layers.items():
        entry[0] = _digest(modules[name].weight.detach().numpy().T)  # how the MatMul holds it
    embedding = reference.get_input_embeddings()
    path = Path(path)
    plain = path.with_name(f".{path.name}.fp32.partial")
    partial = path.with_name(f".{path.name}.partial")
    try:
        export_token_model(reference, plain, batch, opset=opset)
        proto = onnx.load(str(plain))
        replaced = _replace_matmuls(proto.graph, layers)
        quantized_table = table is not None and _replace_gather(
            proto.graph, _digest(embedding.weight.detach().numpy()), *table, embedding_block)
        if not any(o.domain == MS_DOMAIN for o in proto.opset_import):
            proto.opset_import.append(onnx.helper.make_opsetid(MS_DOMAIN, 1))
        onnx.save(proto, str(partial))
        field = output_field(reference, batch)
        with torch.no_grad():
            expected = getattr(reference(**batch, **_no_cache(reference)), field).numpy()
        difference = replace_when_close(partial, path, batch, expected, INT4_TOLERANCE, "the 4-bit graph",
                                        "the fake-quantized PyTorch model's", relative=True)
    finally:
        plain.unlink(missing_ok=True)
        partial.unlink(missing_ok=True)
    return Int4Export(replaced, bool(quantized_table), difference)


def int4_reference(model: nn.Module, embedding_block: int | None = EMBEDDING_BLOCK) -> tuple[nn.Module, tuple | None]:
    """A finalized copy of ``model`` computing what ``export_int4``'s file computes (grids baked,
    the word-embedding table rounded to its 4-bit grid when ``embedding_block`` is given): the
    PyTorch side of the int4 comparison; and the table's ``(codes, scales, zero points)`` or None."""
    from netshrink.core.finalize import finalize_
    from netshrink.core.modules import independent_copy

    reference = finalize_(independent_copy(model).eval())
    if embedding_block is None:
        return reference, None
    block = _block_size(embedding_block, "the embedding block")
    return reference, _round_embedding_(reference.get_input_embeddings(), block)
