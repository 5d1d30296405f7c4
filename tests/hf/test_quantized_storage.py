"""A tiny BERT quantized int8 per channel, word embeddings included, is stored as integers: every
matrix as ``group_int`` (a byte a weight plus a float16 scale and a zero point a row), and it loads
back with identical outputs."""

import pytest
import torch

import netshrink
from netshrink.codec.inspect import inspect_file
from netshrink.core import finalize_
from netshrink.core.model_io import call_model, output_tensor
from tests.models import HF_MODELS, token_inputs

pytest.importorskip("transformers")


def test_int8_per_channel_bert_stores_every_matrix_as_integers(tmp_path):
    torch.manual_seed(0)
    model, x = HF_MODELS["bert"]().eval(), token_inputs()
    netshrink.quantize_(model, netshrink.Quantize(bits=8, granularity="channel"))
    finalize_(model)
    netshrink.save(model, tmp_path / "m.nsk")
    rows = {row["name"]: row for row in inspect_file(tmp_path / "m.nsk")}
    # (the 2-row token-type table is too small for per-row metadata to pay: stored dense)
    matrices = [name for name, tensor in model.state_dict().items() if tensor.dim() == 2 and tensor.numel() >= 256]
    assert "bert.embeddings.word_embeddings.weight" in matrices
    for name in matrices:
        assert rows[name]["encoding"] == "group_int", name
        assert rows[name]["bits_per_weight"] <= 8 + 8 * 3 / model.state_dict()[name].shape[1] + 1, name
    torch.manual_seed(1)
    loaded = netshrink.load(tmp_path / "m.nsk", model=HF_MODELS["bert"]())
    with torch.no_grad():
        assert torch.equal(output_tensor(call_model(loaded, x)), output_tensor(call_model(model, x)))
