"""Unlabeled inputs as a map-style torch ``Dataset``: what recovery from a teacher trains on.

A tensor ``(N, ...)`` (images, token ids) gives items ``x[i]``; a mapping of tensors sharing their
first dimension (a tokenizer's output: ``{"input_ids": (N, T), "attention_mask": (N, T)}``) gives
items ``{key: value[i]}``. torch's default collation stacks them back into batches of the same
form, which ``fit`` reads as inputs without labels.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch.utils.data import Dataset as TorchDataset

from netshrink.core.model_io import sample_count


class UnlabeledInputs(TorchDataset):
    """Samples of ``inputs`` (a tensor, or a dict of tensors with one first dimension), no labels."""

    def __init__(self, inputs: torch.Tensor | Mapping[str, torch.Tensor]) -> None:
        self.count = sample_count(inputs, "the unlabeled data")
        self.inputs = inputs

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> torch.Tensor | dict[str, torch.Tensor]:
        if isinstance(self.inputs, torch.Tensor):
            return self.inputs[index]
        return {key: value[index] for key, value in self.inputs.items()}
