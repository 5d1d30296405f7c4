"""netshrink.models.pretrained: Hugging Face folders load offline; what is missing is one line."""

from __future__ import annotations

import pytest
import torch

from netshrink.core.errors import ConfigError
from netshrink.models.pretrained import load_pretrained, package_folder, sentence_embedding
from tests.models import tiny_bert, token_inputs

pytest.importorskip("transformers")


def test_hf_folder_round_trip(tmp_path):
    from transformers import BertTokenizerFast

    model = tiny_bert()
    model.save_pretrained(tmp_path)
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world"]) + "\n")
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(tmp_path)
    loaded = load_pretrained(f"hf:{tmp_path}")
    inputs = token_inputs(batch=2)
    with torch.no_grad():
        expected = model.eval()(**inputs).logits
        got = loaded.model(**inputs).logits
    assert type(loaded.model) is type(model)
    assert torch.equal(expected, got)
    assert loaded.tokenizer("hello world")["input_ids"][0] == loaded.tokenizer.cls_token_id == 2
    assert loaded.source_bytes > 0


def test_missing_folder_package_and_name_are_one_line(tmp_path):
    for spec in (f"hf:{tmp_path / 'nothing'}", "no-such-model"):
        with pytest.raises(ConfigError) as caught:
            load_pretrained(spec)
        assert "\n" not in str(caught.value)
    with pytest.raises(ConfigError, match="make models"):
        package_folder("netshrink_no_such_package")


def test_sentence_embedding_ignores_padding():
    hidden = torch.randn(1, 4, 8)
    mask = torch.tensor([[1, 1, 0, 0]])
    padded = hidden.clone()
    padded[:, 2:] = 100.0
    assert torch.allclose(sentence_embedding(hidden, mask), sentence_embedding(padded, mask))
    assert torch.allclose(sentence_embedding(hidden, mask).norm(dim=-1), torch.ones(1))
