"""``netshrink.data.read_text``: a file, a folder or lines, tokenized by the model's own tokenizer,
as the batch a Hugging Face model takes; what it cannot read is refused in one line."""

import pytest
import torch

from netshrink.core.errors import ConfigError
from netshrink.data import UnlabeledInputs, read_text

transformers = pytest.importorskip("transformers")

WORDS = "the a model is small and fast it keeps what knew".split()


def _tokenizer():
    """A word-level tokenizer built offline, with a pad and an unknown token."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {word: index for index, word in enumerate(["[PAD]", "[UNK]", *WORDS])}
    inner = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    inner.pre_tokenizer = pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=inner, unk_token="[UNK]", pad_token="[PAD]")


def test_file_folder_and_lines_give_the_same_batch(tmp_path):
    lines = ["the model is small", "", "it keeps what the model knew and is fast"]
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "one.txt").write_text("\n".join(lines[:2]) + "\n")
    (tmp_path / "docs" / "two.txt").write_text(lines[2] + "\n")
    (tmp_path / "tok").mkdir()
    _tokenizer().save_pretrained(tmp_path / "tok")
    batch = read_text(lines, _tokenizer(), max_length=6)
    assert batch["input_ids"].shape == (2, 6)  # the empty line is dropped, the long one cut at 6
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 0, 0], [1] * 6]
    assert batch["input_ids"][0, :4].tolist() == [2 + WORDS.index(w) for w in "the model is small".split()]
    assert batch["input_ids"][0, 4:].tolist() == [0, 0]  # padded with the pad token
    for source, tokenizer in ((tmp_path / "docs", tmp_path / "tok"), (tmp_path / "docs" / "one.txt", _tokenizer())):
        other = read_text(source, tokenizer, max_length=6)
        rows = len(other["input_ids"])
        assert all(torch.equal(other[k], batch[k][:rows, :other[k].shape[1]]) for k in batch)
    assert len(UnlabeledInputs(batch)) == 2 and UnlabeledInputs(batch)[1]["input_ids"].shape == (6,)


@pytest.mark.parametrize("case, words", [
    ("no tokenizer", "needs the model's tokenizer"),
    ("no tokenizer in the folder", "no tokenizer in"),
    ("no such file", "no text file or folder"),
    ("empty text", "holds no passage"),
    ("not text", "must be a file, a folder or a list of strings"),
])
def test_what_cannot_be_read_is_refused_in_one_line(tmp_path, case, words):
    source, tokenizer = ["the model"], _tokenizer()
    if case == "no tokenizer":
        tokenizer = None
    elif case == "no tokenizer in the folder":
        tokenizer = tmp_path
    elif case == "no such file":
        source = tmp_path / "missing.txt"
    elif case == "empty text":
        source = ["", "  "]
    else:
        source = 3
    with pytest.raises(ConfigError, match=words) as info:
        read_text(source, tokenizer)
    assert "\n" not in str(info.value)
