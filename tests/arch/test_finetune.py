"""Fine-tuning after a conversion: distilled from the original, plain fit when distill is missing."""

import copy
import sys

import pytest
import torch
from torch import nn

from netshrink.arch.finetune import finetune, reestimate_batchnorm_
from netshrink.arch.low_rank import LowRank, low_rank_
from netshrink.measure import evaluate
from netshrink.train import FitConfig, fit
from tests.models import TINY_MODELS


def _converted_and_original(digits, trained: bool = True):
    torch.manual_seed(0)
    original = TINY_MODELS["lenet300_100"]()
    if trained:
        fit(original, digits, FitConfig(epochs=3, lr=0.05, batch_size=64), progress=False)
    model = copy.deepcopy(original)
    low_rank_(model, LowRank(rank=2))
    return model, original.eval()


@pytest.mark.slow
def test_fine_tuning_distils_from_the_original_and_recovers_accuracy(digits):
    model, original = _converted_and_original(digits)
    right_after = evaluate(model, digits.val)
    result, how = finetune(model, original, digits, FitConfig(epochs=2, lr=0.05, batch_size=64))
    assert how == "distill" and len(result.history) == 2
    assert evaluate(model, digits.val) > right_after


def test_without_distill_it_falls_back_to_plain_fitting(digits, monkeypatch):
    monkeypatch.setitem(sys.modules, "netshrink.distillation", None)  # import netshrink.distillation fails
    model, original = _converted_and_original(digits, trained=False)
    result, how = finetune(model, original, digits, FitConfig(epochs=1, lr=0.05, batch_size=64))
    assert how == "fit" and len(result.history) == 1


def test_batchnorm_statistics_are_re_estimated_on_the_inputs_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)).eval()
    x = torch.randn(300, 1, 6, 6) * 3 + 1
    weights = [p.detach().clone() for p in model.parameters()]
    reestimate_batchnorm_(model, x, samples=300, batch_size=300)
    with torch.no_grad():
        features = model[0](x).transpose(0, 1).reshape(4, -1)  # (channels, N*H*W)
    torch.testing.assert_close(model[1].running_mean, features.mean(dim=1), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(model[1].running_var, features.var(dim=1), atol=1e-3, rtol=1e-3)
    assert not model.training and model[1].momentum == 0.1
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters(), strict=True))
