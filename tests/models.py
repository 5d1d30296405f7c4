"""Tiny models every technique is tested on: zoo models at small size and users' own classes
(``TINY_MODELS``: 8x8 single-channel inputs, scikit-learn digits, 10 logits), and tiny Hugging
Face transformers (``HF_MODELS``: token ids and an attention mask in, a ``ModelOutput`` out).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from netshrink.models import create

INPUT_SHAPE = (1, 8, 8)
NUM_CLASSES = 10


class UserMLP(nn.Module):
    """A user's own fully connected class (not in the zoo)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 24), nn.ReLU())
        self.head = nn.Linear(24, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class UserResNet(nn.Module):
    """A user's own conv class with BatchNorm, a depthwise conv and a residual add."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.depthwise = nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False)
        self.pointwise = nn.Conv2d(16, 16, 1)
        self.bn = nn.BatchNorm2d(16)
        self.head = nn.Linear(16, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # (B, 16, 8, 8)
        x = torch.relu(x + self.bn(self.pointwise(self.depthwise(x))))
        return self.head(x.mean(dim=(2, 3)))  # (B, classes)


class UserTransformer(nn.Module):
    """A user's own transformer classifier: each of the 8 image rows is a token of 8 pixels, one
    ``nn.TransformerEncoderLayer`` (attention projections and an MLP) and a mean-pooled head.
    Sequence-first (``batch_first=False``) so eval runs the plain modules, not PyTorch's fused
    fast path, and per-layer MACs stay countable."""

    def __init__(self, dim: int = 32, heads: int = 4, hidden: int = 64) -> None:
        super().__init__()
        self.embed = nn.Linear(INPUT_SHAPE[2], dim)
        self.position = nn.Parameter(torch.randn(1, INPUT_SHAPE[1], dim) * 0.02)
        self.encoder = nn.TransformerEncoderLayer(dim, heads, hidden, dropout=0.0)
        self.head = nn.Linear(dim, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x.flatten(1, 2)) + self.position  # (B, 8 rows, dim)
        encoded = self.encoder(tokens.transpose(0, 1))  # (8 rows, B, dim)
        return self.head(encoded.mean(dim=0))  # (B, classes)


TINY_MODELS: dict[str, Callable[[], nn.Module]] = {
    "lenet300_100": lambda: create("lenet300_100", in_features=64),
    "lenet5": lambda: create("lenet5", input_shape=INPUT_SHAPE, padding=2),
    "convnet": lambda: create("convnet", input_shape=INPUT_SHAPE, widths=(8, 8, 16, 16, 16), hidden=32),
    "user_mlp": UserMLP,
    "user_resnet": UserResNet,
    "transformer": UserTransformer,
}


# --- Hugging Face models (the ``hf`` extra): token ids in, ModelOutput out --------------------------
# Kept apart from TINY_MODELS: the tests over those train and evaluate them on the digits images.

VOCAB = 64
SEQUENCE = 8


def tiny_bert() -> nn.Module:
    """A 2-layer BERT classifier (hidden 16, 2 heads, 10 labels; about 6k parameters)."""
    from transformers import BertConfig, BertForSequenceClassification

    return BertForSequenceClassification(BertConfig(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=16, num_labels=NUM_CLASSES))


def tiny_llama(tie: bool = True) -> nn.Module:
    """A 2-layer Llama language model with grouped-query attention (4 query / 2 key-value heads) and
    the output layer tied to the token embedding unless ``tie=False`` (hidden 16; about 6k parameters)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(
        vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=32, tie_word_embeddings=tie, use_cache=False))


HF_MODELS: dict[str, Callable[[], nn.Module]] = {"bert": tiny_bert, "llama": tiny_llama}


def token_inputs(batch: int = 4, seed: int = 0, sequence: int = SEQUENCE) -> dict[str, torch.Tensor]:
    """A batch as Hugging Face models take it: token ids and an attention mask whose first sample
    is padded (its last two positions masked)."""
    ids = torch.randint(0, VOCAB, (batch, sequence), generator=torch.Generator().manual_seed(seed))
    mask = torch.ones_like(ids)
    mask[0, -2:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def word_tokenizer(size: int = VOCAB):
    """A word-level BERT tokenizer of ``size`` tokens: the five specials, then ``w0``, ``w1``, ..."""
    from transformers import BertTokenizer

    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *[f"w{i}" for i in range(size - 5)]]
    return BertTokenizer(vocab={token: index for index, token in enumerate(tokens)})


def save_tiny_bert_folder(folder, lines: int = 24, words: int = 10) -> tuple:
    """A tiny BERT and its tokenizer saved as a Hugging Face folder ``folder/bert`` (what ``hf:PATH``
    names), and ``lines`` passages of ``words`` of its words in ``folder/text.txt``; returns both paths."""
    torch.manual_seed(0)
    tiny_bert().save_pretrained(folder / "bert")
    word_tokenizer().save_pretrained(folder / "bert")
    generator = torch.Generator().manual_seed(0)
    text = [" ".join(f"w{int(i)}" for i in torch.randint(0, VOCAB - 5, (words,), generator=generator))
            for _ in range(lines)]
    (folder / "text.txt").write_text("\n".join(text) + "\n")
    return folder / "bert", folder / "text.txt"


def sample_inputs(name: str, batch: int = 4, seed: int = 0) -> torch.Tensor | dict[str, torch.Tensor]:
    """A batch for the model ``name`` of ``TINY_MODELS`` (8x8 images) or ``HF_MODELS`` (token ids)."""
    if name in HF_MODELS:
        return token_inputs(batch, seed)
    return torch.randn(batch, *INPUT_SHAPE, generator=torch.Generator().manual_seed(seed))
