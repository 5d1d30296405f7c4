"""``netshrink quantize`` / ``prune`` on a pretrained transformer (``--model hf:PATH``) with a
calibration-driven method from the registry and calibration text tokenized by the model's own
tokenizer; bad input is one line, exit status 2, and nothing written."""

import pytest
import torch

import netshrink
from netshrink.cli import main
from netshrink.cli.calibrated import calibrated_methods
from netshrink.codec.inspect import inspect_file
from netshrink.core import get_log
from netshrink.core.model_io import call_model, output_tensor
from netshrink.data import read_text
from netshrink.prune import prune_
from netshrink.quant import quantize_
from tests.models import HF_MODELS, VOCAB, save_tiny_bert_folder, token_inputs, word_tokenizer

pytest.importorskip("transformers")

WORDS = [f"w{i}" for i in range(VOCAB - 5)]


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory):
    """A tiny BERT and its tokenizer saved as a Hugging Face folder (``bert``), and ``text.txt``."""
    root = tmp_path_factory.mktemp("hf")
    folder, text = save_tiny_bert_folder(root)
    assert int(read_text(text, folder)["input_ids"].max()) > 4  # words, not [UNK]
    return root


def test_methods_are_the_registrys_calibrated_configs_of_each_verb():
    assert "gptq" in calibrated_methods(quantize_) and "quantize" not in calibrated_methods(quantize_)
    assert {"sparsegpt", "wanda"} <= set(calibrated_methods(prune_))
    assert "transformer_prune" not in calibrated_methods(prune_)  # calibration data, but no sparsity


def _saved(out, folder):
    from transformers import BertForSequenceClassification

    model = netshrink.load(out / "model.nsk", model=BertForSequenceClassification.from_pretrained(folder))
    return model.eval()


def test_quantize_gptq_4_bit_groups_on_calibration_text(bert_folder, tmp_path, capsys):
    out = tmp_path / "gptq"
    assert main(["quantize", "--model", f"hf:{bert_folder / 'bert'}", "--method", "gptq", "--bits", "4",
                 "--group-size", "8", "--embedding-bits", "4", "--calibration-data", str(bert_folder / "text.txt"),
                 "--out", str(out)]) == 0
    assert "x smaller" in capsys.readouterr().out
    model = _saved(out, bert_folder / "bert")
    record = next(r for r in get_log(model) if r["verb"] == "gptq")
    assert record["config"]["bits"] == 4 and record["config"]["group_size"] == 8 and record["layers"]
    encodings = {row["name"]: row["encoding"] for row in inspect_file(out / "model.nsk")}
    assert all(encodings[f"{layer}.weight"] == "group_int" for layer in record["layers"])
    embeddings = get_log(model)[-2]  # --embedding-bits: the tables too, 16 values a group of 8 at most
    assert embeddings["verb"] == "quantize" and "bert.embeddings.word_embeddings" in embeddings["layers"]
    table = model.bert.embeddings.word_embeddings.weight
    assert int(torch.unique(table).numel()) > 16 and all(torch.unique(g).numel() <= 16 for g in table.reshape(-1, 8))
    with torch.no_grad():
        output_tensor(call_model(model, token_inputs()))


@pytest.mark.parametrize("method,extra,sparsity", [("sparsegpt", ["--sparsity", "0.5"], 0.5),
                                                   ("wanda", ["--nm", "2:4"], 0.5)])
def test_prune_calibrated_methods_on_calibration_text(bert_folder, tmp_path, method, extra, sparsity):
    out = tmp_path / method
    assert main(["prune", "--model", f"hf:{bert_folder / 'bert'}", "--method", method, *extra,
                 "--calibration-data", str(bert_folder / "text.txt"), "--out", str(out)]) == 0
    model = _saved(out, bert_folder / "bert")
    record = next(r for r in get_log(model) if r["verb"] == method)
    for layer in record["layers"]:
        weight = model.get_submodule(layer).weight
        assert float((weight == 0).float().mean()) == pytest.approx(sparsity, abs=0.02)
        if "--nm" in extra:
            assert int((weight.reshape(-1, 4) != 0).sum(dim=1).max()) <= 2


def test_uniform_per_channel_quantizes_the_embeddings_without_calibration(bert_folder, tmp_path):
    out = tmp_path / "int8"
    assert main(["quantize", "--model", f"hf:{bert_folder / 'bert'}", "--bits", "8", "--per-channel",
                 "--out", str(out)]) == 0
    encodings = {row["name"]: row["encoding"] for row in inspect_file(out / "model.nsk")}
    assert encodings["bert.embeddings.word_embeddings.weight"] == "group_int"


def _refused(argv, message, out, capsys):
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not out.exists()


def test_bad_input_is_one_line_and_nothing_is_written(bert_folder, tmp_path, capsys):
    model = ["--model", f"hf:{bert_folder / 'bert'}"]
    text = ["--calibration-data", str(bert_folder / "text.txt")]
    out = tmp_path / "out"
    gptq = ["quantize", *model, "--method", "gptq", *text]
    _refused([*gptq, "--group-size", "12"], "--group-size 12 does not divide the 16 input columns", out, capsys)
    _refused(["prune", *model, "--method", "sparsegpt", "--nm", "2:3", *text], "multiple of 3", out, capsys)
    _refused(["quantize", *model, "--method", "gptq"], "needs --calibration-data", out, capsys)
    _refused(["quantize", *model, "--method", "nope", *text], "unknown --method 'nope'; choose one of", out, capsys)
    _refused(["quantize", "--method", "gptq", *text], "give the model to compress", out, capsys)
    _refused(["quantize", *model, "--bits", "8", *text], "reads no calibration data", out, capsys)
    _refused(["quantize", *model, "--bits", "8", "--embedding-bits", "4"], "with --bits already", out, capsys)
    _refused(["quantize", *model, "--method", "gptq", "--calibration-data", str(tmp_path / "no.txt")],
             "--calibration-data", out, capsys)

    big = tmp_path / "big"  # a tokenizer of a larger vocabulary than the model's
    HF_MODELS["bert"]().save_pretrained(big)
    word_tokenizer(4 * VOCAB).save_pretrained(big)
    (tmp_path / "far.txt").write_text(f"w{4 * VOCAB - 6} w3\n")
    _refused(["quantize", "--model", f"hf:{big}", "--method", "gptq", "--calibration-data", str(tmp_path / "far.txt")],
             f"the tokenizer gives token id {4 * VOCAB - 1}, but the model's vocabulary has {VOCAB}", out, capsys)
    (tmp_path / "long.txt").write_text(" ".join(WORDS[:30]) + "\n")
    _refused(["quantize", *model, "--method", "gptq", "--calibration-data", str(tmp_path / "long.txt")],
             "the model takes at most 16; give --max-length 16", out, capsys)

    bare = tmp_path / "bare"  # a model folder without its tokenizer
    HF_MODELS["bert"]().save_pretrained(bare)
    _refused(["quantize", "--model", f"hf:{bare}", "--method", "gptq", *text], "has no tokenizer", out, capsys)
