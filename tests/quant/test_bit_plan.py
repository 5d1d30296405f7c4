"""Automatic mixed precision: per-layer sensitivity, then bits under a size budget."""

import pytest
import torch

from netshrink.core import finalize_
from netshrink.core.errors import ConfigError
from netshrink.quant import Cluster, Quantize, quantize_
from netshrink.quant.bit_plan import bit_sensitivity, layer_weights, plan_bits
from tests.models import TINY_MODELS
from tests.quant.helpers import distinct, weight_tensors


def test_plan_spends_bits_where_accuracy_needs_them():
    weights = {"conv": 1000, "fc": 1000}
    sensitivity = {"conv": {8: 0.9, 4: 0.6, 2: 0.1}, "fc": {8: 0.9, 4: 0.9, 2: 0.88}}
    assert plan_bits(sensitivity, weights, 8) == {"conv": 8, "fc": 8}
    assert plan_bits(sensitivity, weights, 6) == {"conv": 8, "fc": 4}
    assert plan_bits(sensitivity, weights, 5) == {"conv": 8, "fc": 2}
    assert plan_bits(sensitivity, weights, 3) == {"conv": 4, "fc": 2}


def test_plan_weighs_the_bits_saved_by_layer_size():
    # the same accuracy loss, but the big layer saves ten times the bits
    sensitivity = {"small": {8: 0.9, 4: 0.8}, "big": {8: 0.9, 4: 0.8}}
    assert plan_bits(sensitivity, {"small": 100, "big": 1000}, 7) == {"small": 8, "big": 4}


def test_plan_refuses_an_unreachable_budget():
    with pytest.raises(ConfigError, match="below the 2 the fewest candidate bits give"):
        plan_bits({"a": {8: 0.9, 2: 0.5}}, {"a": 10}, 1.5)


@pytest.mark.slow
@pytest.mark.parametrize("make", [lambda plan: Quantize(bits=plan), lambda plan: Cluster(bits=plan)])
def test_sweep_then_plan_then_quantize(digits, make):
    torch.manual_seed(0)
    model = TINY_MODELS["lenet5"]()
    sensitivity = bit_sensitivity(model, digits.val, make, candidates=(8, 4, 2))
    weights = layer_weights(model)
    assert set(sensitivity) == set(weights) and all(set(s) == {8, 4, 2} for s in sensitivity.values())
    assert all(p.grad is None for p in model.parameters()) and not any(hasattr(m, "parametrizations")
                                                                       for m in model.modules())  # untouched
    plan = plan_bits(sensitivity, weights, 4.0)
    assert sum(weights[n] * b for n, b in plan.items()) / sum(weights.values()) <= 4.0
    quantize_(model, Quantize(bits=plan))
    finalize_(model)
    for name, weight in weight_tensors(model).items():
        assert distinct(weight) <= 2 ** plan[name], name
