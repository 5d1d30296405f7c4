"""Hugging Face text models in ONNX Runtime: token-id export, ORT int8 (dynamic and static), the fused
fp32 graph, and GPTQ's 4-bit grids as MatMulNBits / GatherBlockQuantized."""

import numpy as np
import onnx
import pytest
import torch

from netshrink.core.errors import ConfigError
from netshrink.quant.gptq import GPTQ
from netshrink.quant.onnx_export import export_onnx, quantize_onnx_dynamic, quantize_onnx_int8, run_onnx
from netshrink.quant.onnx_int4 import MIN_INT4_OPSET, export_int4, int4_reference
from netshrink.quant.onnx_tokens import TOKEN_TOLERANCE, export_token_model
from netshrink.quant.uniform import quantize_
from tests.models import HF_MODELS, token_inputs

pytest.importorskip("transformers")


def ops(path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in onnx.load(str(path)).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def relative(got: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(got - expected).max() / max(1.0, float(np.abs(expected).max())))


@pytest.fixture(scope="module")
def bert_file(tmp_path_factory):
    torch.manual_seed(0)
    model = HF_MODELS["bert"]().eval()
    path = tmp_path_factory.mktemp("bert") / "bert.onnx"
    difference = export_onnx(model, path, token_inputs())  # export_onnx sends a token batch to onnx_tokens
    return model, path, difference


def test_a_token_model_exports_with_dynamic_batch_and_sequence(bert_file):
    model, path, difference = bert_file
    assert difference <= TOKEN_TOLERANCE
    longer = token_inputs(batch=3, seed=5, sequence=13)  # neither the exported batch nor length
    with torch.no_grad():
        expected = model(**longer).logits.numpy()
    got = run_onnx(path, longer)
    assert got.shape == expected.shape == (3, 10)
    assert relative(got, expected) <= TOKEN_TOLERANCE


def test_ort_int8_dynamic_and_static_quantize_the_matmuls_and_stay_close(bert_file, tmp_path):
    model, path, _ = bert_file
    batch = token_inputs(batch=8, seed=2)
    with torch.no_grad():
        expected = model(**batch).logits.numpy()
    quantize_onnx_dynamic(path, tmp_path / "dynamic.onnx")
    quantize_onnx_int8(path, tmp_path / "static.onnx", token_inputs(batch=16, seed=3), batch_size=8)
    assert ops(tmp_path / "dynamic.onnx").get("DynamicQuantizeLinear", 0) > 0
    assert ops(tmp_path / "static.onnx").get("QuantizeLinear", 0) > 0
    for name in ("dynamic", "static"):
        got = run_onnx(tmp_path / f"{name}.onnx", batch)
        assert 0 < relative(got, expected) < 0.1  # quantized, and close


def test_token_batches_are_checked_in_one_line(tmp_path):
    model = HF_MODELS["bert"]()
    ids = token_inputs()
    with pytest.raises(ConfigError, match=r"inputs\['attention_mask'\] must be an integer tensor"):
        export_token_model(model, tmp_path / "m.onnx", {**ids, "attention_mask": ids["attention_mask"].float()})
    with pytest.raises(ConfigError, match=r"inputs hold \['pixel_values'\]"):
        export_token_model(model, tmp_path / "m.onnx", {**ids, "pixel_values": torch.zeros(4, 3)})
    with pytest.raises(ConfigError, match="does not take these token inputs"):
        export_token_model(model, tmp_path / "m.onnx", {"input_ids": ids["input_ids"] + 1000})
    with pytest.raises(ConfigError, match="inputs must be a tokenizer's batch"):
        export_token_model(model, tmp_path / "m.onnx", ids["input_ids"])
    assert not list(tmp_path.iterdir())


@pytest.fixture(scope="module")
def gptq_llama():
    torch.manual_seed(0)
    model = HF_MODELS["llama"]().eval()
    quantize_(model, GPTQ(bits=4, group_size=16, calibration_data=token_inputs(batch=16, seed=3)))
    return model


@pytest.mark.slow
def test_gptq_int4_runs_as_matmul_nbits_and_matches_the_fake_quantized_model(gptq_llama, tmp_path):
    model = gptq_llama
    written = export_int4(model, tmp_path / "m.int4.onnx", token_inputs(), embedding_block=16)
    counts = ops(tmp_path / "m.int4.onnx")
    linears = 7 * len(model.model.layers)  # q, k, v, o, gate, up, down per layer
    assert written.matmul_nbits == counts["MatMulNBits"] == linears
    assert written.embedding and counts["GatherBlockQuantized"] == 1
    assert "Gather" not in counts
    reference, _ = int4_reference(model, embedding_block=16)
    longer = token_inputs(batch=2, seed=7, sequence=11)
    with torch.no_grad():
        expected = reference(**longer).logits.numpy()
        fp32 = torch.nn.utils.parametrize.is_parametrized(model.model.layers[0].mlp.up_proj)
    assert fp32  # the model given is left as it was (grids on, not finalized)
    assert relative(run_onnx(tmp_path / "m.int4.onnx", longer), expected) <= 1e-3
    graph = onnx.load(str(tmp_path / "m.int4.onnx")).graph
    packed = [i for i in graph.initializer if i.name.endswith("_q4")]
    assert packed and all(i.data_type in (onnx.TensorProto.UINT8, onnx.TensorProto.UINT4) for i in packed)


def test_int4_bad_input_is_one_line(gptq_llama, tmp_path):
    with pytest.raises(ConfigError, match=f"opset 17 is too old for int4.*needs opset >= {MIN_INT4_OPSET}"):
        export_int4(gptq_llama, tmp_path / "m.onnx", token_inputs(), opset=17)
    with pytest.raises(ConfigError, match="the embedding block is 24; .* power of two >= 16"):
        export_int4(gptq_llama, tmp_path / "m.onnx", token_inputs(), embedding_block=24)
    with pytest.raises(ConfigError, match="no Linear layer carries a 4-bit group grid"):
        export_int4(HF_MODELS["llama"](), tmp_path / "m.onnx", token_inputs())
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_the_fused_graph_computes_what_the_exported_one_does(bert_file, tmp_path):
    from netshrink.quant.onnx_fuse import fuse_onnx

    model, path, _ = bert_file
    fused = fuse_onnx(path, tmp_path / "fused.onnx", "bert")
    assert fused.get("SkipLayerNormalization", 0) > 0
    batch = token_inputs(batch=3, seed=4, sequence=10)
    assert relative(run_onnx(tmp_path / "fused.onnx", batch), run_onnx(path, batch)) <= TOKEN_TOLERANCE


def test_dynamic_int8_quantizes_the_fused_attention_too(bert_file, tmp_path):
    """onnxscript's fused Attention carries qkv_hidden_sizes, which ONNX Runtime's quantizer skips;
    with equal sizes it is dropped, so the attention's QKV projection runs in int8 (QAttention)."""
    from netshrink.quant.onnx_fuse import fuse_onnx

    model, path, _ = bert_file
    fuse_onnx(path, tmp_path / "fused.onnx", "bert")
    assert ops(tmp_path / "fused.onnx").get("Attention", 0) == 2
    quantize_onnx_dynamic(tmp_path / "fused.onnx", tmp_path / "dynamic.onnx")
    assert ops(tmp_path / "dynamic.onnx").get("QAttention", 0) == 2
    batch = token_inputs(batch=8, seed=2)
    with torch.no_grad():
        expected = model(**batch).logits.numpy()
    assert 0 < relative(run_onnx(tmp_path / "dynamic.onnx", batch), expected) < 0.1
