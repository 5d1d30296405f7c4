"""Omitted classes (the transfer set) and the bias adjustment of Hinton et al. 2015, sec. 3."""

import pytest
import torch
from torch import nn

from netshrink.core.errors import ConfigError
from netshrink.distillation import Distill, choose_class_bias, distill, raise_class_bias_, without_classes
from netshrink.measure.accuracy import predict_logits
from netshrink.train import FitConfig
from tests.models import TINY_MODELS


def test_transfer_set_drops_the_class_and_keeps_validation_whole(digits):
    transfer = without_classes(digits, [3])
    assert 3 not in transfer.train.y.tolist()
    assert len(transfer.train) == len(digits.train) - int((digits.train.y == 3).sum())
    assert transfer.val is digits.val and transfer.test is digits.test


def test_unknown_omitted_class_is_refused(digits):
    with pytest.raises(ConfigError, match="not classes"):
        without_classes(digits, [10])


def _class_accuracy(model, split, cls):
    mask = split.y == cls
    return float((predict_logits(model, split.x[mask]).argmax(1) == cls).float().mean())


def test_bias_chosen_on_validation_recovers_the_omitted_class(teacher, digits):
    torch.manual_seed(0)
    student = TINY_MODELS["lenet300_100"]()
    distill(student, teacher, digits, Distill(T=4.0, alpha=1.0, omit_classes=(3,)), FitConfig(epochs=6, batch_size=32),
            progress=False)
    before = _class_accuracy(student, digits.val, 3)
    amount, val_acc = choose_class_bias(student, digits.val, [3])
    assert amount > 0
    bias_before = student.fc3.bias.detach().clone()
    raise_class_bias_(student, [3], amount, digits.val.x[:2])
    shift = student.fc3.bias.detach() - bias_before
    assert shift[3] == pytest.approx(amount) and torch.count_nonzero(shift) == 1
    assert _class_accuracy(student, digits.val, 3) > before
    assert float((predict_logits(student, digits.val.x).argmax(1) == digits.val.y).float().mean()) == val_acc


def test_bias_adjustment_needs_an_output_linear(digits):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.ReLU())
    with pytest.raises(ConfigError, match="Linear layer with a bias"):
        choose_class_bias(model, digits.val, [3])
