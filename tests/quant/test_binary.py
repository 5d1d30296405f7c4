"""Binary weights: BinaryConnect and BWN, shadow clipping, straight-through gradients, 1 bit per weight."""

import pytest
import torch

from netshrink.codec.inspect import inspect_report
from netshrink.core import finalize_
from netshrink.core.errors import ConfigError
from netshrink.quant import Binarize, binarize_
from netshrink.quant.binary import BinaryWeight
from tests.models import TINY_MODELS
from tests.quant.helpers import round_trip, weight_tensors


def test_bwn_rows_are_plus_minus_their_mean_magnitude():
    torch.manual_seed(0)
    model = TINY_MODELS["lenet5"]()
    names = list(weight_tensors(model))
    original = weight_tensors(model)
    binarize_(model, Binarize(method="bwn"))
    finalize_(model)
    weights = weight_tensors(model)
    for name in names[1:-1]:
        w, shadow = weights[name], original[name].clamp(-1, 1)
        alpha = shadow.abs().reshape(w.shape[0], -1).mean(dim=1)
        expected = torch.where(shadow >= 0, 1.0, -1.0) * alpha.reshape(-1, *[1] * (w.dim() - 1))
        assert torch.equal(w, expected), name
    for name in (names[0], names[-1]):  # keep_first_last
        assert torch.equal(weights[name], original[name])


def test_binaryconnect_weights_are_signs(tiny_model):
    binarize_(tiny_model, Binarize(method="binaryconnect", keep_first_last=False))
    finalize_(tiny_model)
    for name, weight in weight_tensors(tiny_model).items():
        assert set(weight.unique().tolist()) <= {-1.0, 1.0}, name


def test_shadow_weights_are_clipped_and_gradients_cancelled_outside():
    layer = torch.nn.Linear(4, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.5, -2.0, 0.1, 3.0], [-0.3, 0.2, 1.5, -0.9]]))
    model = torch.nn.Sequential(layer)
    binarize_(model, Binarize(method="binaryconnect", keep_first_last=False))
    shadow = layer.parametrizations.weight.original
    assert float(shadow.detach().abs().max()) <= 1.0  # clipped to [-1, 1] (BinaryConnect, Algorithm 1)
    with torch.no_grad():
        shadow.add_(torch.tensor([[0.0, 0.0, 0.0, 5.0], [0.0, 0.0, 0.0, 0.0]]))  # an update past the bound
    layer(torch.ones(1, 4)).sum().backward()
    assert float(shadow.detach().abs().max()) <= 1.0
    assert torch.equal(shadow.grad, torch.ones(2, 4))  # |w| <= 1 everywhere after the clip: gradient passes

    values = torch.tensor([-1.5, -0.5, 0.5, 1.5], requires_grad=True)
    from netshrink.quant.binary import binary_sign

    binary_sign(values).sum().backward()
    assert values.grad.tolist() == [0.0, 1.0, 1.0, 0.0]


def test_stochastic_binarization_is_random_while_training_and_deterministic_after():
    torch.manual_seed(0)
    model = TINY_MODELS["user_mlp"]()
    binarize_(model, Binarize(method="binaryconnect", stochastic=True))
    layer = model.body[3]
    shadow = layer.parametrizations.weight.original.detach().clone()
    model.train()
    draws = torch.stack([layer.weight.detach() for _ in range(200)])
    assert not torch.equal(draws[0], draws[1])
    # P(+1) = hard_sigmoid(w): the mean draw is 2 p - 1 = w (for |w| <= 1)
    assert torch.allclose(draws.mean(dim=0), shadow, atol=0.25)
    model.eval()
    assert torch.equal(layer.weight, layer.weight)
    finalize_(model.train())
    assert torch.equal(layer.weight, torch.where(shadow >= 0, 1.0, -1.0))


def test_binary_activations_reach_the_inner_layers_only(tmp_path):
    torch.manual_seed(0)
    model = TINY_MODELS["lenet300_100"]()
    binarize_(model, Binarize(activations=True))
    seen = {}
    for name in ("fc1", "fc2", "fc3"):  # hooks run in order: these see what the layers see
        model.get_submodule(name).register_forward_pre_hook(
            lambda m, args, name=name: seen.__setitem__(name, args[0].detach()))
    model(torch.rand(4, 1, 8, 8))
    assert set(seen["fc2"].unique().tolist()) <= {-1.0, 1.0}
    assert len(seen["fc1"].unique()) > 2  # the image itself is never binarized
    finalize_(model)
    loaded, _ = round_trip(model, None, tmp_path / "bin.nsk")
    x = torch.rand(4, 1, 8, 8)
    assert torch.equal(loaded(x), model.eval()(x))  # the hooks come back from the log


def test_binarized_layers_cost_one_bit_per_weight(tmp_path):
    torch.manual_seed(0)
    model = TINY_MODELS["lenet5"]()
    binarize_(model, Binarize(method="bwn"))
    finalize_(model)
    _, size = round_trip(model, None, tmp_path / "bwn.nsk")
    weights = weight_tensors(model)
    names = list(weights)
    inner = sum(weights[n].numel() for n in names[1:-1])
    kept = sum(weights[n].numel() for n in (names[0], names[-1])) + sum(
        p.numel() for n, p in model.named_parameters() if n.endswith("bias"))
    assert size <= inner / 8 + 8 * sum(weights[n].shape[0] for n in names[1:-1]) + 4 * kept + 4096
    assert "binary" in inspect_report(tmp_path / "bwn.nsk")


def test_bad_input_is_one_line():
    with pytest.raises(ConfigError, match="unknown binarization method"):
        Binarize(method="xnor")
    with pytest.raises(ConfigError, match="stochastic must be true or false"):
        Binarize(stochastic="yes")
    with pytest.raises(ConfigError, match="nothing left to binarize"):
        binarize_(torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 2)), Binarize())
    assert not any(isinstance(m, BinaryWeight) for m in TINY_MODELS["user_mlp"]().modules())
