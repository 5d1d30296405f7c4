"""``netshrink export`` of a user's class (``--model package.module:function``) and of a Hugging Face
text model (``--model hf:PATH``) with ONNX Runtime int8 and int4; one-line errors."""

import onnx
import pytest
import torch

from netshrink.cli import main
from netshrink.train import save_model
from tests.models import HF_MODELS, UserMLP

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"the a of to and in is it that for on with as be".split()]


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    """A tiny BERT classifier saved as a Hugging Face folder, with a word-level tokenizer."""
    pytest.importorskip("transformers")
    from transformers import BertTokenizer

    folder = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    HF_MODELS["bert"]().save_pretrained(folder)
    (folder / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    BertTokenizer(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_a_user_class_exports_from_its_builder_and_checkpoint(tmp_path, capsys):
    torch.manual_seed(0)
    save_model(tmp_path / "mlp.safetensors", UserMLP())
    code, out, err = run(["export", tmp_path / "mlp.safetensors", "--model", "tests.models:UserMLP", "--onnx",
                          tmp_path / "m.onnx", "--int8", "dynamic", "--data", "digits"], capsys)
    assert code == 0, err
    assert float(out.split("max abs difference ")[1].split()[0]) <= 1e-4
    assert (tmp_path / "m.int8.onnx").is_file() and "int8 (dynamic)" in out


@pytest.mark.slow
def test_a_hugging_face_folder_exports_fp32_int8_and_int4(hf_folder, tmp_path, capsys):
    text = tmp_path / "text.txt"
    text.write_text("\n".join(" ".join(WORDS[5 + (i + j) % 14] for j in range(12)) for i in range(40)) + "\n")
    code, out, err = run(["export", "--model", f"hf:{hf_folder}", "--text", text, "--onnx", tmp_path / "m.onnx",
                          "--int8", "dynamic", "--int4", "--group-size", "16", "--embedding-block", "16"], capsys)
    assert code == 0, err
    ops = {node.op_type for node in onnx.load(str(tmp_path / "m.int4.onnx")).graph.node}
    assert {"MatMulNBits", "GatherBlockQuantized"} <= ops
    assert (tmp_path / "m.onnx").is_file() and (tmp_path / "m.int8.onnx").is_file()
    assert "12 MatMulNBits" in out  # 2 layers x (q, k, v, o, intermediate, output)


@pytest.mark.parametrize("options,message", [
    (["--int4", "--opset", "17"], "--opset 17 is too old for --int4: MatMulNBits with a uint4 embedding table "
                                  "needs opset >= 21"),
    (["--int4", "--group-size", "24"], "--group-size 24: ONNX Runtime's 4-bit blocks need a power of two >= 16"),
    (["--int4", "--group-size", "16"], "--embedding-block 32 does not divide the embedding width 16"),
    (["--int4", "--group-size", "64", "--embedding-block", "16"],
     "--group-size 64 does not divide the 16 inputs of layer 'bert.encoder.layer.0.attention.self.query'"),
])
def test_text_export_bad_input_is_one_line(hf_folder, tmp_path, capsys, options, message):
    code, _, err = run(["export", "--model", f"hf:{hf_folder}", "--onnx", tmp_path / "m.onnx", *options], capsys)
    assert code == 2 and message in err and err.count("\n") == 1
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("options,message", [
    (["--model", "no_such_package.module:build"], "--model 'no_such_package.module:build': cannot import it"),
    (["--model", "tests.models"], "give package.module:function, hf:PATH, minilm or smollm2"),
    (["--model", "tests.models:VOCAB"], "--model 'tests.models:VOCAB' failed: TypeError"),
    (["--model", "tests.models:UserMLP", "--int4"], "--int4 writes MatMulNBits for text models"),
    (["--model", "tests.models:UserMLP", "--text", "t.txt"], "--text is for text models"),
    ([], "give the FILE to export, or --model"),
])
def test_export_model_flags_are_checked_in_one_line(tmp_path, capsys, options, message):
    code, _, err = run(["export", "--onnx", tmp_path / "m.onnx", "--data", "digits", *options], capsys)
    assert code == 2 and message in err and err.count("\n") == 1
    assert not list(tmp_path.iterdir())
