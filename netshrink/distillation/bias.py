"""Classes left out of the transfer set, and the bias adjustment of Hinton et al. 2015, sec. 3.

A student distilled on a transfer set without some classes learns them only from the soft targets
of other classes' images ("dark knowledge"), and under-predicts them; the paper raises the
omitted class's output bias by an amount (3.5 for MNIST's 3) and recovers most of its accuracy.
``choose_class_bias`` picks that amount on the validation split (never test), maximising overall
accuracy; ``raise_class_bias_`` applies it to the output layer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import nn

from netshrink.core.errors import ConfigError
from netshrink.data import Dataset, Split
from netshrink.distillation.teacher import device_of
from netshrink.measure.accuracy import predict_logits

DEFAULT_BIAS_GRID = tuple(i * 0.25 for i in range(81))  # 0, 0.25, ..., 20


def without_classes(data: Dataset, classes: Sequence[int]) -> Dataset:
    """``data`` with the training split's samples of ``classes`` removed (the transfer set);
    validation and test are kept whole, so the omitted classes can still be measured."""
    if not classes:
        return data
    unknown = sorted(set(classes) - set(range(data.num_classes)))
    if unknown:
        raise ConfigError(f"omitted classes {unknown} are not classes of {data.name} (0..{data.num_classes - 1})")
    keep = ~torch.isin(data.train.y, torch.tensor(sorted(set(classes))))
    if not keep.any():
        raise ConfigError("omitting those classes leaves no training samples; omit fewer classes")
    return dataclasses.replace(data, train=Split(data.train.x[keep], data.train.y[keep]))


def output_layer(model: nn.Module, sample: torch.Tensor) -> nn.Linear:
    """The ``nn.Linear`` with a bias whose output is the model's output (checked on ``sample``)."""
    outputs: dict[str, torch.Tensor] = {}
    linears = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear) and m.bias is not None}
    handles = [m.register_forward_hook(lambda mod, inp, out, name=name: outputs.__setitem__(name, out))
               for name, m in linears.items()]
    was_training = model.training
    try:
        with torch.no_grad():
            logits = model.eval()(sample.to(device_of(model)))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    for name, out in outputs.items():
        if out.shape == logits.shape and torch.equal(out, logits):
            return linears[name]
    raise ConfigError("the model's output is not the output of a Linear layer with a bias; "
                      "the bias adjustment needs one (shift the omitted classes' logits yourself)")


def raise_class_bias_(model: nn.Module, classes: Sequence[int], amount: float, sample: torch.Tensor) -> nn.Module:
    """Add ``amount`` to the output bias of ``classes`` in place (``sample``: a few inputs, to
    find the output layer) and return the model."""
    layer = output_layer(model, sample)
    with torch.no_grad():
        layer.bias[list(classes)] += amount
    return model


def choose_class_bias(model: nn.Module, val: Split, classes: Sequence[int],
                      grid: Sequence[float] = DEFAULT_BIAS_GRID) -> tuple[float, float]:
    """``(amount, val_accuracy)``: the bias raise of ``classes`` in ``grid`` that maximises accuracy
    on the validation split (the smallest such amount on ties)."""
    if len(val) == 0:
        raise ConfigError("choosing the bias adjustment needs a validation split; load the data with val_fraction > 0")
    output_layer(model, val.x[:2])  # the shift below equals a bias change only for an output Linear
    logits = predict_logits(model, val.x, device=device_of(model))
    columns = torch.tensor(sorted(set(classes)))
    best = (0.0, -1.0)
    for amount in grid:
        shifted = logits.clone()
        shifted[:, columns] += amount
        accuracy = float((shifted.argmax(1) == val.y).float().mean())
        if accuracy > best[1]:
            best = (float(amount), accuracy)
    return best
