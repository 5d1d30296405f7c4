"""Peers of the transformers benchmark on all-MiniLM-L6-v2, on the same passages: ONNX Runtime's
``quantize_dynamic`` (int8, per channel) and ``MatMulNBitsQuantizer`` (4-bit, block 128, RTN) on a
``torch.onnx.export`` (dynamo) of the model, and optimum-quanto's int8 / int4 weights when it is
importable (it is installed with ``pip install --target`` beside torch, never pulling another);
and Torch-Pruning's heads and MLP neurons removal for the transformer speed benchmark.

Each peer returns its last hidden states on given passages (from which the benchmark takes the
sentence embeddings) and the bytes of its model file, or a one-line reason it could not run.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

Hidden = Callable[[dict[str, torch.Tensor]], torch.Tensor]


class _LastHidden(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def export_onnx(model: nn.Module, sample: dict[str, torch.Tensor], path: Path) -> None:
    """The model's last hidden state as one self-contained ONNX file (weights inside)."""
    import onnx

    folder = Path(tempfile.mkdtemp())
    args = (sample["input_ids"][:2], sample["attention_mask"][:2])
    batch, length = torch.export.Dim("batch"), torch.export.Dim("length", max=512)
    shapes = {"input_ids": {0: batch, 1: length}, "attention_mask": {0: batch, 1: length}}
    torch.onnx.export(_LastHidden(model).eval(), args, folder / "m.onnx", input_names=["input_ids", "attention_mask"],
                      output_names=["hidden"], dynamic_shapes=shapes, dynamo=True)
    onnx.save_model(onnx.load(folder / "m.onnx"), path, save_as_external_data=False)


def _session(path: Path) -> Hidden:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def hidden(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        feeds = {"input_ids": batch["input_ids"].numpy(), "attention_mask": batch["attention_mask"].numpy()}
        return torch.from_numpy(session.run(None, feeds)[0])

    return hidden


def onnx_peers(model: nn.Module, sample: dict[str, torch.Tensor], folder: Path) -> dict[str, tuple[Hidden, int] | str]:
    """``{peer: (hidden, file bytes) or reason}`` for the ONNX Runtime peers."""
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
        from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer
    except ImportError as error:
        reason = f"onnxruntime quantization is not importable ({error})"
        return {"ort_fp32": reason, "ort_dynamic_int8_channel": reason, "ort_matmulnbits_4bit_b128": reason}
    import onnx

    fp32 = folder / "fp32.onnx"
    export_onnx(model, sample, fp32)
    peers: dict[str, tuple[Hidden, int] | str] = {"ort_fp32": (_session(fp32), fp32.stat().st_size)}
    int8 = folder / "int8.onnx"
    quantize_dynamic(fp32, int8, per_channel=True, weight_type=QuantType.QInt8)
    peers["ort_dynamic_int8_channel"] = (_session(int8), int8.stat().st_size)
    config = DefaultWeightOnlyQuantConfig(block_size=128, is_symmetric=False)
    quantizer = MatMulNBitsQuantizer(onnx.load(fp32), block_size=128, is_symmetric=False, algo_config=config)
    quantizer.process()
    int4 = folder / "int4.onnx"
    quantizer.model.save_model_to_file(str(int4), False)
    peers["ort_matmulnbits_4bit_b128"] = (_session(int4), int4.stat().st_size)
    return peers


def quanto_peers(model_factory: Callable[[], nn.Module], folder: Path) -> dict[str, tuple[Hidden, int] | str]:
    """``{peer: (hidden, file bytes) or reason}`` for optimum-quanto's int8 and int4 weights (its
    safetensors file of the quantized state, as its ``quantization_map`` save does)."""
    try:
        from optimum.quanto import freeze, qint4, qint8, quantization_map, quantize
        from safetensors.torch import save_file
    except Exception as error:  # noqa: BLE001 (any import failure is the peer's reason)
        reason = f"optimum-quanto is not importable here ({type(error).__name__}: {str(error)[:80]})"
        return {"quanto_int8": reason, "quanto_int4": reason}
    peers: dict[str, tuple[Hidden, int] | str] = {}
    for name, weights in (("quanto_int8", qint8), ("quanto_int4", qint4)):
        try:
            model = model_factory()
            quantize(model, weights=weights)
            freeze(model)
            path = folder / f"{name}.safetensors"
            state = {k: v.contiguous() for k, v in model.state_dict().items()}
            save_file(state, path, metadata={"quantization_map": str(quantization_map(model))})
            wrapped = _LastHidden(model).eval()

            def hidden(batch: dict[str, torch.Tensor], wrapped: nn.Module = wrapped) -> torch.Tensor:
                with torch.no_grad():
                    return wrapped(batch["input_ids"], batch["attention_mask"])

            peers[name] = (hidden, os.path.getsize(path))
        except Exception as error:  # noqa: BLE001 (a peer that fails is reported, not fatal)
            peers[name] = f"{type(error).__name__}: {str(error)[:120]}"
    return peers


def torch_pruning_heads_and_neurons(model: nn.Module, sample: dict[str, torch.Tensor], heads_kept: int,
                                    neurons_kept: int) -> None:
    """Torch-Pruning's ``MetaPruner`` (its Hugging Face BERT example: ``num_heads`` with
    ``prune_num_heads=True``, whole heads, group L2 magnitude importance) on a BERT encoder in place,
    keeping exactly ``heads_kept`` heads and ``neurons_kept`` MLP neurons in all, spread as evenly
    as whole numbers allow over the layers (its example's uniform ratios, per layer through
    ``head_pruning_ratio_dict`` / ``pruning_ratio_dict``); the hidden size is kept (embeddings and
    every layer's output projections ignored), as ours keeps it. Raises ``ImportError`` when
    ``torch_pruning`` is not installed (``make peers``)."""
    import math

    import torch_pruning as tp

    layers = model.encoder.layer
    heads, head_ratios, neuron_ratios = {}, {}, {}  # neuron_ratios: Torch-Pruning's per-group ratios
    for index, layer in enumerate(layers):
        attention, mlp = layer.attention.self, layer.intermediate.dense
        heads.update({linear: attention.num_attention_heads for linear in (attention.query, attention.key,
                                                                             attention.value)})
        keep_heads = heads_kept // len(layers) + (index < heads_kept % len(layers))
        keep_neurons = neurons_kept // len(layers) + (index < neurons_kept % len(layers))
        removed = attention.num_attention_heads - keep_heads
        # Torch-Pruning removes ceil(ratio * heads) heads and keeps int(neurons * (1 - ratio)) neurons
        head_ratios[attention] = (removed - 0.25) / attention.num_attention_heads if removed else 0.0
        neuron_ratios[layer.intermediate] = 1 - (keep_neurons + 0.5) / mlp.out_features
        neuron_ratios[attention] = head_ratios[attention]  # a group at ratio 0 is skipped before its heads
        assert math.ceil(head_ratios[attention] * attention.num_attention_heads) == removed
    ignored = [model.embeddings, *(m for m in [getattr(model, "pooler", None)] if m is not None),
               *(layer.attention.output.dense for layer in layers), *(layer.output.dense for layer in layers)]
    pruner = tp.pruner.MetaPruner(model, {k: v[:1] for k, v in sample.items()},
                                  importance=tp.importance.GroupMagnitudeImportance(p=2), pruning_ratio=0.0,
                                  pruning_ratio_dict=neuron_ratios, head_pruning_ratio_dict=head_ratios,
                                  num_heads=heads, prune_num_heads=True, prune_head_dims=False, ignored_layers=ignored,
                                  output_transform=lambda out: out.last_hidden_state)
    pruner.step()
    for layer in layers:  # what the pruned linears no longer say by themselves (as its BERT example does)
        attention = layer.attention.self
        attention.num_attention_heads = pruner.num_heads[attention.query]
        attention.all_head_size = attention.query.out_features
