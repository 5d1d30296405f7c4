"""Our 4-bit grids in onnxruntime-genai's int4 decoder graph (``onnx_decoder``).

The builder quantizes the fp32 weights it is given itself (symmetric round-to-nearest). A model
quantized by netshrink (``GPTQ(bits=4, group_size=G)`` before ``finalize_``) already holds better
4-bit codes, so each ``MatMulNBits`` node of the builder's graph whose layers carry such grids gets
our codes, scales and zero points instead (``place_grids``): GPTQ's own codes, not a re-quantization
(the packing is ``onnx_int4``'s). The builder names its nodes after the layers
(``/model/layers.{i}/attn/qkv_proj/MatMul_Q4`` holds ``q_proj``, ``k_proj`` and ``v_proj`` stacked
along the outputs, ``/lm_head/MatMul_Q4`` the output layer); ``NODE_LAYERS`` maps them.

``graph_reference`` is half of the check: a copy of the model whose every quantized layer holds
the weights the graph's ``MatMulNBits`` dequantize to (ours where we placed them, the builder's
elsewhere, such as a tied output layer, whose 4-bit table the builder also makes the word
embeddings), so the graph must compute what that copy computes (a wrong node-to-layer mapping or
stacking order fails it); the other half compares each placed layer's dequantized weight with
the model's fake-quantized one (wrong values fail it).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from netshrink.core.errors import ConfigError
from netshrink.quant.onnx_int4 import _codes, _drop_unused, _initializers, nbits_initializers
from netshrink.quant.uniform import FakeQuantize

#: the builder's MatMulNBits node names -> the Hugging Face Llama-family layers each holds, in order
NODE_LAYERS = (
    (re.compile(r"^/model/layers\.(\d+)/attn/qkv_proj/MatMul_Q4$"),
     ("model.layers.{}.self_attn.q_proj", "model.layers.{}.self_attn.k_proj", "model.layers.{}.self_attn.v_proj")),
    (re.compile(r"^/model/layers\.(\d+)/attn/o_proj/MatMul_Q4$"), ("model.layers.{}.self_attn.o_proj",)),
    (re.compile(r"^/model/layers\.(\d+)/mlp/(gate|up|down)_proj/MatMul_Q4$"), ("model.layers.{}.mlp.{}_proj",)),
    (re.compile(r"^/lm_head/MatMul_Q4$"), ("lm_head",)),
)


def node_layers(node_name: str) -> tuple[str, ...]:
    """The layers a builder ``MatMulNBits`` node holds, stacked along its outputs (a one-line
    ``ConfigError`` for a node this module does not know)."""
    for pattern, layers in NODE_LAYERS:
        match = pattern.match(node_name)
        if match:
            return tuple(layer.format(*match.groups()) for layer in layers)
    raise ConfigError(f"the builder wrote a 4-bit node {node_name!r} this export does not know")


def _nbits_nodes(graph) -> list:
    return [node for node in graph.node if node.op_type == "MatMulNBits"]


def place_grids(onnx_path: Path, model: nn.Module, grids: dict[str, FakeQuantize]) -> set[str]:
    """Replace the codes of every builder node whose layers carry grids in ``grids`` (name -> grid,
    one group size) by ours; rewrites the file (weights beside it). Returns the layers placed. A
    node holding some layers with grids and some without (q_proj quantized, k_proj not), a grid on
    a tied output layer (whose table the builder shares with the embeddings) and a grid layer no node
    holds are refused in one line."""
    import onnx
    from onnx import helper

    proto = onnx.load(str(onnx_path))
    modules = dict(model.named_modules())
    placed: set[str] = set()
    for node in _nbits_nodes(proto.graph):
        layers = node_layers(node.name)
        with_grids = [name for name in layers if name in grids]
        if not with_grids:
            continue
        if len(with_grids) < len(layers):
            without = ", ".join(sorted(set(layers) - set(with_grids)))
            raise ConfigError(f"{', '.join(with_grids)} carry 4-bit grids but {without} do not; the builder packs them "
                              "into one block, so quantize all or none")
        if layers == ("lm_head",) and _shares_table(proto.graph, node):
            raise ConfigError("the tied output layer carries a 4-bit grid, but the builder shares its table with the "
                              "word embeddings; quantize without it")
        parts = [_codes(modules[name].weight, grids[name]) for name in layers]
        codes, scales, zeros = (np.concatenate(arrays, axis=0) for arrays in zip(*parts, strict=True))
        attributes = {a.name: a.i for a in node.attribute}
        if codes.shape != (attributes["N"], attributes["K"]):
            raise ConfigError(f"node {node.name!r} holds {attributes['N']} x {attributes['K']} weights, the layers "
                              f"{codes.shape[0]} x {codes.shape[1]}")
        prefix = f"{node.name.strip('/').replace('/', '.')}.netshrink"
        proto.graph.initializer.extend(nbits_initializers(prefix, codes, scales, zeros, grids[layers[0]].group_size))
        old = set(node.input[1:])
        del node.input[1:]
        node.input.extend([f"{prefix}_q4", f"{prefix}_scales", f"{prefix}_zero_points"])
        for attribute in node.attribute:
            if attribute.name == "block_size":
                attribute.CopyFrom(helper.make_attribute("block_size", grids[layers[0]].group_size))
        _drop_unused(proto.graph, old)
        placed.update(layers)
    missing = sorted(set(grids) - placed)
    if missing:
        raise ConfigError(f"no 4-bit node of the builder's graph holds {missing[0]!r}, which carries a grid")
    data = onnx_path.with_name(f"{onnx_path.name}.data")
    data.unlink(missing_ok=True)  # every tensor is in memory; onnx would append to the old file
    onnx.save(proto, str(onnx_path), save_as_external_data=True, all_tensors_to_one_file=True, location=data.name)
    return placed


def _dequantize(values: dict, node) -> np.ndarray:
    """The ``(N, K)`` weight a ``MatMulNBits`` node computes with, its inputs read from the graph's
    initializers ``values`` by name (low nibble first; zero point 8 when the node has none, as ONNX
    Runtime's symmetric blocks do)."""
    from onnx import numpy_helper

    attributes = {a.name: a.i for a in node.attribute}
    n, k, block = attributes["N"], attributes["K"], attributes["block_size"]
    blocks = -(-k // block)

    def nibbles(packed: np.ndarray, count: int) -> np.ndarray:  # (n, count) values of n packed rows
        rows = packed.reshape(n, -1)
        return np.stack([rows & 0x0F, rows >> 4], axis=-1).reshape(n, -1)[:, :count].astype(np.float32)

    codes = nibbles(numpy_helper.to_array(values[node.input[1]]), blocks * block).reshape(n, blocks, block)
    scales = numpy_helper.to_array(values[node.input[2]]).reshape(n, blocks, 1).astype(np.float32)
    zeros = nibbles(numpy_helper.to_array(values[node.input[3]]), blocks).reshape(n, blocks, 1) \
        if len(node.input) > 3 and node.input[3] else np.float32(8)
    return ((codes - zeros) * scales).reshape(n, blocks * block)[:, :k]


def graph_reference(onnx_path: Path, model: nn.Module) -> nn.Module:
    """``model`` (finalized, fp32) with each quantized layer's weight set to what the graph's
    ``MatMulNBits`` dequantize to (a tied output layer untied first)."""
    import onnx

    proto = onnx.load(str(onnx_path))
    modules, values = dict(model.named_modules()), _initializers(proto.graph)
    for node in _nbits_nodes(proto.graph):
        layers = node_layers(node.name)
        weight = torch.from_numpy(_dequantize(values, node))
        start = 0
        for name in layers:
            module = modules.get(name)
            if not isinstance(module, nn.Linear):
                raise ConfigError(f"the builder's 4-bit node {node.name!r} stands for {name!r}, which this model "
                                  "does not have")
            rows = module.out_features
            module.weight = nn.Parameter(weight[start:start + rows].clone(), requires_grad=False)
            start += rows
        if layers == ("lm_head",) and _shares_table(proto.graph, node):
            model.get_input_embeddings().weight = module.weight  # the builder's tied 4-bit table
    return model


def _shares_table(graph, lm_head) -> bool:
    """Whether the builder made the word embeddings a ``GatherBlockQuantized`` over the output
    layer's 4-bit table (its form of tied embeddings: the same scales)."""
    return any(node.op_type == "GatherBlockQuantized" and lm_head.input[2] in node.input for node in graph.node)
