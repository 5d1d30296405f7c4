"""Calibration data: a few batches of model inputs, without labels, from whatever the user holds.

``calibration_batches`` turns each of these into a list of batches that ``core.model_io.call_model``
runs:

- a tensor ``(N, ...)`` (images, token ids) or a mapping of tensors sharing their first dimension
  (``{"input_ids": (N, T), "attention_mask": (N, T)}``), cut into batches of ``batch_size``;
- a netshrink ``Split`` (its inputs ``x``);
- a list of batches, each a tensor, a mapping (a tokenizer's output) or a tuple of positional inputs;
- a map-style torch ``Dataset`` or a ``DataLoader`` over one, as ``fit`` reads them: each sample or
  batch is the inputs, or an ``(inputs, labels)`` pair whose labels are dropped.

``run_calibration`` runs the model on one batch and turns the errors of data that does not fit the
model (a wrong shape, token ids beyond the vocabulary, keywords it does not take) into one line.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from netshrink.core.errors import ConfigError, one_line
from netshrink.core.model_io import Inputs, batch_length, call_model, map_tensors, sample_count
from netshrink.data.dataset import Split

BATCH_SIZE = 32


def calibration_batches(data: Any, batch_size: int = BATCH_SIZE) -> list[Inputs]:
    """``data`` (see the module docstring) as a non-empty list of batches, or a one-line ConfigError."""
    if isinstance(data, Split):
        data = data.x
    if isinstance(data, DataLoader):
        batches = [_inputs_of(batch) for batch in data]
    elif isinstance(data, (torch.Tensor, Mapping)):
        batches = _cut(data, batch_size)
    elif isinstance(data, (list, tuple)):
        batches = list(data)
    elif isinstance(data, TorchDataset) and hasattr(data, "__len__"):
        batches = [_inputs_of(batch) for batch in DataLoader(data, batch_size=batch_size)]
    else:
        raise ConfigError(f"calibration_data must be a tensor, a dict of tensors, a list of batches, a Dataset or "
                          f"a DataLoader, got {type(data).__name__}")
    if not batches:
        raise ConfigError("calibration_data is empty; give a few batches of the model's inputs")
    for index, batch in enumerate(batches):
        try:
            batch_length(batch)
        except TypeError:
            raise ConfigError(f"calibration batch {index} is a {type(batch).__name__} holding no tensor; give "
                              "tensors or dicts of tensors") from None
    return batches


def _inputs_of(batch: Any) -> Inputs:
    """A Dataset's or DataLoader's batch without its labels (``(inputs, labels)`` as ``fit`` reads)."""
    return batch[0] if isinstance(batch, (tuple, list)) and len(batch) == 2 else batch


def _cut(data: torch.Tensor | Mapping[str, torch.Tensor], batch_size: int) -> list[Inputs]:
    count = sample_count(data, "calibration_data")
    return [map_tensors(data, lambda t, s=start: t[s:s + batch_size]) for start in range(0, count, batch_size)]


def model_device(model: nn.Module) -> torch.device:
    """Where the model's parameters are (the CPU for a model without any)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def run_calibration(model: nn.Module, batch: Inputs, index: int, passing: tuple[type[BaseException], ...] = ()) -> Any:
    """``model`` on calibration batch ``index`` (moved to the model's device); exceptions of the types
    in ``passing`` go through, any other is a one-line ConfigError saying the data does not fit."""
    device = model_device(model)
    batch = map_tensors(batch, lambda t: t.to(device))
    try:
        return call_model(model, batch)
    except passing:
        raise
    except (RuntimeError, IndexError, TypeError, ValueError, KeyError, AttributeError) as error:
        raise ConfigError(f"calibration batch {index} does not fit {type(model).__name__} ({one_line(error, 160)}); "
                          "give batches of its inputs (the shape it was trained on, token ids below its vocabulary "
                          "size)") from None
