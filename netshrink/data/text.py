"""Unlabeled text for calibration and recovery: a file, a folder of files, or lines, tokenized by
the model's own tokenizer into the batch a Hugging Face model takes.

Each non-empty line of a text file is one passage (a folder: its ``*.txt`` files, recursively,
in sorted order). Passages are tokenized (``add_special_tokens``, as the model saw in training),
cut at ``max_length`` tokens, and padded to the longest with the tokenizer's pad token (its end
of text token when it has none, as Llama tokenizers; padded positions are masked out).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from netshrink.core.errors import ConfigError, one_line

MAX_LENGTH = 128


def read_text(source: str | os.PathLike[str] | Sequence[str], tokenizer: Any,
              max_length: int = MAX_LENGTH) -> dict[str, torch.Tensor]:
    """``{"input_ids": (N, L), "attention_mask": (N, L)}`` of the passages of ``source``.

    Args:
        source: a text file, a folder of ``*.txt`` files, or a list of passages.
        tokenizer: the model's tokenizer (a Hugging Face tokenizer), or the folder it was saved in
            (read offline with ``AutoTokenizer.from_pretrained``).
        max_length: the most tokens a passage keeps (longer ones are cut).

    A missing file or tokenizer, or no text, is a one-line ``ConfigError``.
    """
    if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 1:
        raise ConfigError(f"max_length must be a positive number of tokens, got {max_length!r}")
    passages = read_passages(source)
    tokenizer = _tokenizer(tokenizer)
    ids = tokenizer(passages, truncation=True, max_length=max_length)["input_ids"]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    longest = max(len(row) for row in ids)
    input_ids = torch.full((len(ids), longest), pad if pad is not None else 0, dtype=torch.long)
    attention_mask = torch.zeros((len(ids), longest), dtype=torch.long)
    for index, row in enumerate(ids):
        input_ids[index, :len(row)] = torch.tensor(row, dtype=torch.long)
        attention_mask[index, :len(row)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def check_vocabulary(inputs: dict[str, torch.Tensor], model: Any, what: str) -> None:
    """A one-line ``ConfigError`` (``what: ...``) when token ids of ``inputs`` lie beyond the
    vocabulary of ``model``'s input embedding: text tokenized by another model's tokenizer."""
    vocabulary = model.get_input_embeddings().num_embeddings
    largest = int(inputs["input_ids"].max())
    if largest >= vocabulary:
        raise ConfigError(f"{what}: the tokenizer gives token id {largest}, but the model's vocabulary has "
                          f"{vocabulary} entries; use the model's own tokenizer")


def read_passages(source: Any) -> list[str]:
    """The passages of ``source`` (a file, a folder of .txt files or a list of strings): its
    non-empty lines, stripped; a one-line ``ConfigError`` when there are none."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            files = sorted(path.rglob("*.txt"))
        elif path.is_file():
            files = [path]
        else:
            raise ConfigError(f"no text file or folder at {str(path)!r}; give a file, a folder of .txt files or "
                              "a list of passages")
        try:
            lines = [line for file in files for line in file.read_text(encoding="utf-8").splitlines()]
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the text at {str(path)!r} ({one_line(exc, 120)})") from None
    elif isinstance(source, Sequence) and all(isinstance(line, str) for line in source):
        lines = list(source)
    else:
        raise ConfigError(f"text must be a file, a folder or a list of strings, got {type(source).__name__}")
    passages = [line.strip() for line in lines if line.strip()]
    if not passages:
        raise ConfigError("the text holds no passage (every line is empty); give some text")
    return passages


def _tokenizer(tokenizer: Any) -> Any:
    if tokenizer is None:
        raise ConfigError("reading text needs the model's tokenizer: give it, or the folder it was saved in")
    if not isinstance(tokenizer, (str, os.PathLike)):
        if not callable(tokenizer):
            raise ConfigError(f"the tokenizer must be a Hugging Face tokenizer or its folder, got "
                              f"{type(tokenizer).__name__}")
        return tokenizer
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise ConfigError("reading a tokenizer from a folder needs the hf extra (pip install "
                          "'netshrink[hf]')") from None
    try:
        return AutoTokenizer.from_pretrained(str(tokenizer), local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"no tokenizer in {str(tokenizer)!r} ({one_line(exc, 120)}); give the folder the "
                          "model's tokenizer was saved in") from None
