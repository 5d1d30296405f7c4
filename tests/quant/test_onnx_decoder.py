"""A decoder LLM exported with its KV cache through onnxruntime-genai's builder (quant/onnx_decoder.py):
the graph matches PyTorch, ONNX Runtime GenAI decodes with the cache what ``generate`` does, int4 is
smaller, and what the builder cannot take is refused in one line with nothing written."""

import numpy as np
import pytest
import torch

from netshrink.cli import main
from netshrink.core.errors import ConfigError
from netshrink.quant.gptq import GPTQ
from netshrink.quant.uniform import quantize_
from tests.models import HF_MODELS, VOCAB

transformers = pytest.importorskip("transformers")
og = pytest.importorskip("onnxruntime_genai")
from netshrink.quant.onnx_decoder import (  # noqa: E402
    DECODER_TOLERANCE,
    check_decoder_model,
    decoder_perplexity,
    export_decoder,
)


def word_tokenizer():
    """A word-level fast tokenizer over ``VOCAB`` words ``t0 .. t{VOCAB-1}``."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel({f"t{i}": i for i in range(VOCAB)}, unk_token="t0"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="t0", bos_token="t1",
                                                eos_token="t2", pad_token="t2")


def builder_llama(hidden: int = 256, mlp: int = 512) -> torch.nn.Module:
    """A one-layer Llama the builder's graph computes exactly (widths of 128 and less it does not:
    see ``DECODER_TOLERANCE``), with grouped-query attention and tied embeddings."""
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=hidden, intermediate_size=mlp, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=True)).eval()


CALIBRATION = torch.randint(3, VOCAB, (8, 24), generator=torch.Generator().manual_seed(2))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model, folder = builder_llama(), tmp_path_factory.mktemp("decoder")
    return model, {p: export_decoder(model, word_tokenizer(), folder / p, p, block_size=64) for p in ("fp32", "int4")}


@pytest.mark.slow
def test_the_fp32_graph_matches_pytorch_and_decodes_with_its_cache_what_generate_does(exported):
    model, files = exported
    assert files["fp32"].difference <= DECODER_TOLERANCE
    windows = torch.randint(3, VOCAB, (3, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(input_ids=windows).logits
    expected = float(torch.stack([torch.nn.functional.cross_entropy(row[:-1], w[1:])
                                  for row, w in zip(logits, windows, strict=True)]).mean().exp())
    assert decoder_perplexity(files["fp32"].folder, windows) == pytest.approx(expected, rel=1e-4)
    prompt = windows[0, :8]
    with torch.no_grad():
        greedy = model.generate(prompt[None], max_new_tokens=12, do_sample=False, min_new_tokens=12)[0, 8:]
    genai_model = og.Model(str(files["fp32"].folder))
    generator_params = og.GeneratorParams(genai_model)
    generator_params.set_search_options(max_length=20, do_sample=False)
    generator = og.Generator(genai_model, generator_params)
    generator.append_tokens(prompt.numpy().astype(np.int32))
    tokens = []
    while len(tokens) < 12:
        generator.generate_next_token()
        tokens.append(int(generator.get_next_tokens()[0]))
    assert tokens == greedy.tolist()  # token by token through the KV cache, as PyTorch decodes


@pytest.mark.slow
def test_int4_writes_matmul_nbits_smaller_and_close(exported):
    import onnx

    _, files = exported
    nodes = onnx.load(str(files["int4"].onnx_path), load_external_data=False).graph.node
    assert "GroupQueryAttention" in {node.op_type for node in nodes}
    blocks = [a.i for node in nodes if node.op_type == "MatMulNBits" for a in node.attribute if a.name == "block_size"]
    assert len(blocks) == 6 and set(blocks) == {64}  # q/k/v, o, gate, up, down, lm_head: the block asked for
    assert files["int4"].bytes * 3 < files["fp32"].bytes
    assert 0 < files["int4"].difference < 0.5


@pytest.mark.slow
def test_int4_keeps_gptq_codes_where_the_model_has_grids(tmp_path):
    from netshrink.core.finalize import finalize_
    from netshrink.core.modules import independent_copy
    from netshrink.quant.onnx_decoder_grids import graph_reference

    model = builder_llama(hidden=192, mlp=320)  # groups of 64: 3 and 5 blocks a row (an odd count pads)
    model.config.tie_word_embeddings = False  # an output layer of its own, quantized too
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
    quantize_(model, GPTQ(bits=4, group_size=64, act_order=True, calibration_data=CALIBRATION))
    written = export_decoder(model, word_tokenizer(), tmp_path / "d", "int4")
    baked = finalize_(independent_copy(model))
    held = graph_reference(written.onnx_path, independent_copy(baked))
    quantized = [name for name, m in baked.named_modules() if isinstance(m, torch.nn.Linear)]
    assert "lm_head" in quantized and "model.layers.0.self_attn.k_proj" in quantized
    for name in quantized:  # every block of the file holds GPTQ's own codes, scales and zero points
        torch.testing.assert_close(held.get_submodule(name).weight, baked.get_submodule(name).weight,
                                   rtol=0, atol=1e-6)
    assert written.difference < 0.5
    partial = builder_llama(hidden=192, mlp=320)
    quantize_(partial, GPTQ(bits=4, group_size=64, layers=["model.layers.0.self_attn.q_proj"],
                            calibration_data=CALIBRATION))
    with pytest.raises(ConfigError, match="q_proj carry 4-bit grids but .*k_proj, .*v_proj do not"):
        export_decoder(partial, word_tokenizer(), tmp_path / "e", "int4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_what_the_builder_cannot_take_is_refused_in_one_line(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="heads of 4 values: ONNX Runtime's GroupQueryAttention.*multiple of 8"):
        check_decoder_model(HF_MODELS["llama"]())
    with pytest.raises(ConfigError, match="BertForSequenceClassification is not a decoder LLM"):
        check_decoder_model(HF_MODELS["bert"]())
    pruned = builder_llama()
    pruned.model.layers[0].mlp.up_proj = torch.nn.Linear(256, 256, bias=False)
    with pytest.raises(ConfigError, match=r"'model.layers.0.mlp.up_proj.weight' has shape \(256, 256\) where the "):
        check_decoder_model(pruned)
    with pytest.raises(ConfigError, match="takes fp32 weights and the model has torch.float16"):
        check_decoder_model(builder_llama().half())
    shallow = builder_llama()
    shallow.model.layers = shallow.model.layers[:0]
    with pytest.raises(ConfigError, match="layers differ from its config .* missing, e.g. 'model.layers.0."):
        check_decoder_model(shallow)
    model = builder_llama()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="not the current one"):
        export_decoder(model, word_tokenizer(), ".")
    with pytest.raises(ConfigError, match="needs the model's transformers tokenizer"):
        export_decoder(model, None, tmp_path / "a")
    with pytest.raises(ConfigError, match="4-bit blocks of 24 weights"):
        export_decoder(model, word_tokenizer(), tmp_path / "a", block_size=24)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(ConfigError, match="already exists and is not an empty folder"):
        export_decoder(model, word_tokenizer(), tmp_path / "full")
    mixed = builder_llama()
    for group, layer in ((32, "model.layers.0.mlp.up_proj"), (64, "model.layers.0.self_attn.q_proj")):
        quantize_(mixed, GPTQ(bits=4, group_size=group, layers=[layer], calibration_data=CALIBRATION))
    with pytest.raises(ConfigError, match=r"grids have group sizes \[32, 64\]; the builder's blocks take one"):
        export_decoder(mixed, word_tokenizer(), tmp_path / "b")
    from netshrink.quant.onnx_decoder_grids import node_layers

    assert node_layers("/model/layers.3/attn/qkv_proj/MatMul_Q4") == tuple(
        f"model.layers.3.self_attn.{p}_proj" for p in "qkv")
    with pytest.raises(ConfigError, match="a 4-bit node '/model/layers.0/mlp/gate_up_proj/MatMul_Q4' this export"):
        node_layers("/model/layers.0/mlp/gate_up_proj/MatMul_Q4")
    import netshrink.quant.onnx_decoder as onnx_decoder

    def failing_builder(*args, **kwargs):
        raise ConfigError("onnxruntime-genai's builder failed: no")

    monkeypatch.setattr(onnx_decoder, "_run_builder", failing_builder)
    with pytest.raises(ConfigError, match="builder failed"):
        export_decoder(builder_llama(), word_tokenizer(), tmp_path / "new" / "deeper" / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"]  # the folders it made are gone again


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory):
    def save(model):
        folder = tmp_path_factory.mktemp("llama")
        model.save_pretrained(folder)
        word_tokenizer().save_pretrained(folder)
        return folder
    return save


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_the_cli_writes_a_checked_decoder_folder_or_nothing(llama_folder, tmp_path, capsys, monkeypatch):
    text = tmp_path / "text.txt"
    text.write_text("\n".join(" ".join(f"t{3 + (i * 7 + j) % (VOCAB - 3)}" for j in range(40)) for i in range(8)))
    code, out, err = run(["export", "--model", f"hf:{llama_folder(builder_llama())}", "--decoder", tmp_path / "d",
                          "--int4", "--text", text], capsys)
    assert code == 0, err
    assert "int4 decoder with its KV cache" in out and (tmp_path / "d" / "genai_config.json").is_file()
    import netshrink.quant.onnx_decoder as onnx_decoder

    monkeypatch.setattr(onnx_decoder, "check_decoder", lambda *args, **kwargs: 0.05)  # a graph that is off
    folder = llama_folder(builder_llama())
    code, _, err = run(["export", "--model", f"hf:{folder}", "--decoder", tmp_path / "e", "--text", text], capsys)
    assert code == 2 and "differs from PyTorch by" in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "text.txt"]


@pytest.mark.parametrize("options,message", [
    (["--decoder", "d", "--onnx", "m.onnx"], "give one of --onnx OUT.onnx"),
    (["--decoder", "d", "--int8"], "--int8 is for --onnx files"),
    (["--decoder", "d", "--opset", "21"], "--opset is for --onnx files"),
    (["--decoder", "d", "--int4", "--group-size", "512"], "--group-size 512: the decoder's 4-bit blocks take"),
    (["--decoder", "d", "--int4", "--embedding-block", "16"], "--embedding-block is for --onnx --int4 files"),
])
def test_decoder_flags_are_checked_in_one_line(tmp_path, capsys, options, message):
    code, _, err = run(["export", "--model", "hf:/nowhere", *[tmp_path / o if o in ("d", "m.onnx") else o
                                                               for o in options]], capsys)
    assert code == 2 and message in err and err.count("\n") == 1
    assert not list(tmp_path.iterdir())
