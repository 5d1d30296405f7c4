"""How netshrink runs a model on a batch and reads a tensor from what it returns.

A batch of inputs is a tensor (images, token ids), a tuple of positional inputs, or a mapping of
keyword inputs (``{"input_ids": ..., "attention_mask": ...}``, as Hugging Face models take them).
A model returns a tensor, a tuple whose first item is the main output, or a mapping such as a
Hugging Face ``ModelOutput`` (its ``logits`` when it has them, else its first tensor).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from netshrink.core.errors import ConfigError

Inputs = torch.Tensor | tuple[Any, ...] | list[Any] | Mapping[str, Any]

#: the output a mapping's main tensor is read from, in order of preference
MAIN_OUTPUT_KEYS = ("logits", "last_hidden_state")


def call_model(model: nn.Module, inputs: Inputs) -> Any:
    """``model(**inputs)`` for a mapping, ``model(*inputs)`` for a tuple or list, else ``model(inputs)``."""
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def output_tensor(outputs: Any) -> torch.Tensor:
    """The main tensor of a model's outputs: the tensor itself, a tuple's first item, a mapping's
    ``logits`` (else ``last_hidden_state``, else its first tensor)."""
    if isinstance(outputs, torch.Tensor):
        return outputs
    if isinstance(outputs, Mapping):
        for key in MAIN_OUTPUT_KEYS:
            if isinstance(outputs.get(key), torch.Tensor):
                return outputs[key]
        values = list(outputs.values())
    elif isinstance(outputs, (tuple, list)):
        values = list(outputs)
    else:
        raise TypeError(f"cannot read a tensor from a model output of type {type(outputs).__name__}")
    for value in values:
        if isinstance(value, torch.Tensor):
            return value
    raise TypeError(f"the model's {type(outputs).__name__} output holds no tensor")


def map_tensors(inputs: Any, function) -> Any:
    """``inputs`` with ``function`` applied to every tensor in it (mappings, tuples and lists are
    walked; anything else is kept): to move a batch to a device or cut a slice of it."""
    if isinstance(inputs, torch.Tensor):
        return function(inputs)
    if isinstance(inputs, Mapping):
        return {key: map_tensors(value, function) for key, value in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(map_tensors(value, function) for value in inputs)
    return inputs


def batch_length(inputs: Inputs) -> int:
    """The number of samples in a batch: the first dimension of its first tensor."""
    found: list[int] = []
    map_tensors(inputs, lambda t: found.append(t.shape[0] if t.dim() else 1))
    if not found:
        raise TypeError(f"a batch of {type(inputs).__name__} holds no tensor")
    return found[0]


def sample_count(inputs: torch.Tensor | Mapping[str, torch.Tensor], what: str) -> int:
    """The number of samples in ``inputs``, a tensor ``(N, ...)`` or a mapping of tensors that share
    their first dimension (a tokenizer's output); anything else is a one-line ConfigError naming
    ``what`` the inputs are."""
    if isinstance(inputs, torch.Tensor):
        if inputs.dim() == 0:
            raise ConfigError(f"{what} is a single number; give a batch of inputs (N, ...)")
        return inputs.shape[0]
    if isinstance(inputs, Mapping):
        sizes = {key: tuple(value.shape)[:1] if isinstance(value, torch.Tensor) else None
                 for key, value in inputs.items()}
        if not sizes or None in sizes.values() or () in sizes.values() or len(set(sizes.values())) != 1:
            raise ConfigError(f"{what}'s tensors must share their first (sample) dimension, got {sizes}")
        return next(iter(sizes.values()))[0]
    raise ConfigError(f"{what} is a tensor or a dict of tensors, got {type(inputs).__name__}")
