"""fit on data that is not held as in-memory tensors: a torch Dataset of (x, y) pairs or a DataLoader."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, SubsetRandomSampler, TensorDataset

from netshrink.core.errors import ConfigError
from netshrink.train import FitConfig, fit
from tests.models import TINY_MODELS

CONFIG = FitConfig(epochs=2, batch_size=32, lr=0.05, augment=True, seed=5)


def _pairs(split):
    return TensorDataset(split.x, split.y)


def _fit(data, digits, **kwargs):
    torch.manual_seed(0)
    return fit(TINY_MODELS["convnet"](), data, CONFIG, progress=False, **kwargs)


@pytest.mark.parametrize("form", ["split", "dataset", "loader", "loader with 2 workers"])
def test_dataset_and_loader_give_the_weights_of_in_memory_tensors(digits, form):
    """The same samples give the same run whichever form holds them (one order, one augmentation
    stream, and loading draws nothing from the global RNG that dropout uses)."""
    reference = _fit(digits, digits)
    if form == "split":
        result = _fit(digits.train, digits, val=digits.val)
    elif form == "dataset":
        result = _fit(_pairs(digits.train), digits, val=digits.val)
    else:
        workers = 2 if "workers" in form else 0
        result = _fit(DataLoader(_pairs(digits.train), batch_size=CONFIG.batch_size, shuffle=True,
                                 num_workers=workers),
                      digits, val=DataLoader(_pairs(digits.val), batch_size=100, num_workers=workers))
    for key, value in reference.model.state_dict().items():
        assert torch.equal(result.model.state_dict()[key], value), key
    for ours, theirs in zip(result.history, reference.history, strict=True):
        assert ours["train_loss"] == theirs["train_loss"] and ours["train_acc"] == theirs["train_acc"]
        assert ours["val_acc"] == pytest.approx(theirs["val_acc"], abs=1e-6)


class TokenParity(torch.utils.data.Dataset):
    """Token-id sequences made on demand from their index (nothing held in memory): label 1 when
    token 1 occurs more often than token 2, else 0."""

    def __init__(self, size: int, offset: int = 0, length: int = 16, vocab: int = 12) -> None:
        self.size, self.offset, self.length, self.vocab = size, offset, length, vocab

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(self.offset + index)
        tokens = torch.randint(0, self.vocab, (self.length,), generator=generator)  # (T,)
        return tokens, torch.tensor(int((tokens == 1).sum() > (tokens == 2).sum()))


class BagOfTokens(nn.Module):
    def __init__(self, vocab: int = 12, dim: int = 16) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.head = nn.Linear(dim, 2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(tokens).mean(1))  # (B, T, D) -> (B, 2)


def test_token_id_dataset_trains_a_text_model():
    torch.manual_seed(0)
    result = fit(BagOfTokens(), TokenParity(2000), FitConfig(epochs=2, batch_size=50, lr=0.1, optimizer="adam",
                                                             weight_decay=0.0),
                 val=TokenParity(500, offset=10_000), progress=False)
    val = TokenParity(500, offset=10_000)
    ones = sum(int(val[i][1]) for i in range(len(val))) / len(val)
    assert result.val_acc > max(ones, 1 - ones) + 0.2  # the majority class is 0.6; measured 1.0 with seeds 0-3


class TaggedTokens(TokenParity):
    """Per-token labels: 1 where the token is 1, else 0 (a (T,) label per sequence)."""

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, _ = super().__getitem__(index)
        return tokens, (tokens == 1).long()


class TokenTagger(BagOfTokens):
    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(tokens))  # (B, T, 2)


def test_per_token_labels_count_accuracy_per_token():
    def token_loss(logits, x, y):
        return nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())  # (B*T, 2) vs (B*T,)

    torch.manual_seed(0)
    result = fit(TokenTagger(), TaggedTokens(600), FitConfig(epochs=2, batch_size=50, lr=0.1, optimizer="adam"),
                 loss_fn=token_loss, val=TaggedTokens(200, offset=10_000), progress=False)
    assert result.val_acc > 0.99  # 1 - 1/12 = 0.92 by always answering 0
    assert 0.92 < result.history[-1]["train_acc"] <= 1.0


def test_without_val_nothing_is_evaluated(digits):
    result = fit(TINY_MODELS["user_mlp"](), _pairs(digits.train), FitConfig(epochs=1), progress=False)
    assert result.val_acc is None and result.history[0]["val_acc"] is None


class _Stream(IterableDataset):
    def __iter__(self):
        yield torch.zeros(1, 8, 8), torch.tensor(0)


@pytest.mark.parametrize("case, words", [
    ("own sampler", "without sampler"),
    ("drop_last", "drop_last=False"),
    ("other batch size", "batch_size 16 differs"),
    ("iterable", "IterableDataset"),
    ("not a dataset", "got list"),
    ("netshrink Dataset and val", "its own val split"),
    ("whole netshrink Dataset as val", "whole netshrink Dataset"),
    ("items are triples", r"not an \(x, y\) pair"),
    ("items have no labels, the loss needs them", "has no labels"),
])
def test_data_fit_cannot_use_is_refused_in_one_line(digits, case, words):
    pairs = _pairs(digits.train)
    config = FitConfig(epochs=1, batch_size=32)
    data, val = {
        "own sampler": (DataLoader(pairs, batch_size=32, sampler=SubsetRandomSampler(range(100))), None),
        "drop_last": (DataLoader(pairs, batch_size=32, drop_last=True), None),
        "other batch size": (DataLoader(pairs, batch_size=16), None),
        "iterable": (_Stream(), None),
        "not a dataset": (list(pairs), None),
        "netshrink Dataset and val": (digits, _pairs(digits.val)),
        "whole netshrink Dataset as val": (pairs, digits),
        "items are triples": (TensorDataset(digits.train.x, digits.train.y, digits.train.y), None),
        "items have no labels, the loss needs them": (TensorDataset(digits.train.x), None),
    }[case]
    with pytest.raises(ConfigError, match=words) as info:
        fit(TINY_MODELS["user_mlp"](), data, config, val=val, progress=False)
    assert "\n" not in str(info.value)
