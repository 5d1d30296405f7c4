"""AWQ (``quantize_(model, AWQ(...))``): on inputs with a few large channels its layer output error
is below round-to-nearest's on the same grid, and on a whole model's calibration data too; the
stored weight lies on its grid and the layer divides its inputs by the kept scales; it runs on the
tiny transformers and CNNs, saves and loads identical; bad input is one line and leaves the model
untouched."""

import pytest
import torch
from torch import nn

import netshrink
from netshrink.calibration.hessian import LayerInputs
from netshrink.core import ConfigError, finalize_, get_log
from netshrink.core.model_io import call_model, output_tensor
from netshrink.quant import AWQ, Quantize, quantize_
from netshrink.quant.awq import search_scales
from netshrink.quant.calibration import calibrate
from tests.models import HF_MODELS, TINY_MODELS, sample_inputs, token_inputs
from tests.refusals import assert_refused_untouched


def _salient_layer() -> tuple[nn.Linear, torch.Tensor]:
    """A Linear (16 outputs, 32 inputs) and 512 inputs of which 3 channels are 20x larger, as the
    activation outliers of section 3.1."""
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(512, 32, generator=generator)
    inputs[:, :3] *= 20
    layer = nn.Linear(32, 16, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(16, 32, generator=generator))
    return layer, inputs


@pytest.mark.parametrize("group_size", [None, 8])
def test_layer_output_error_is_below_round_to_nearests_when_a_few_channels_are_large(group_size):
    layer, inputs = _salient_layer()
    stats = LayerInputs(layer)
    stats.add(inputs)
    scale, quantized, grid, details = search_scales(layer, stats, AWQ(bits=3, group_size=group_size))
    assert torch.equal(grid.fake_quantize(quantized), quantized)  # the stored weight is on its grid
    weight = layer.weight.detach()
    rounded = calibrate(weight, 3, "affine", True, "minmax", group_size=group_size or 0).fake_quantize(weight)
    awq_error = (inputs / scale) @ quantized.T - inputs @ weight.T
    rtn_error = inputs @ (rounded - weight).T
    assert details["alpha"] > 0 and awq_error.norm() < 0.9 * rtn_error.norm()
    # the logged errors are the measured ones
    assert details["error"] == pytest.approx(float(awq_error.pow(2).sum()) / len(inputs), rel=1e-3)
    assert details["rtn_error"] == pytest.approx(float(rtn_error.pow(2).sum()) / len(inputs), rel=1e-3)


def _build(name: str) -> nn.Module:
    if name in HF_MODELS:
        pytest.importorskip("transformers")
    torch.manual_seed(0)
    return {**HF_MODELS, **TINY_MODELS}[name]().eval()


def _calibration(name: str):
    return token_inputs(16, seed=2) if name in HF_MODELS else sample_inputs(name, 32, seed=2)


@pytest.mark.parametrize("name", ["llama", "bert", "convnet", "user_resnet"])
def test_runs_on_transformers_and_cnns_and_saves_and_loads_identical(name, tmp_path):
    model, x = _build(name), sample_inputs(name, 4, seed=1)
    quantize_(model, AWQ(bits=4, group_size=8 if name in HF_MODELS else None, grid=5,
                         calibration_data=_calibration(name)))
    record = get_log(model)[-1]
    assert record["verb"] == "awq"
    with torch.no_grad():
        before = output_tensor(call_model(model, x))
    finalize_(model)
    netshrink.save(model, tmp_path / "m.nsk")
    loaded = netshrink.load(tmp_path / "m.nsk", model=None if name == "convnet" else _build(name))
    with torch.no_grad():
        assert torch.equal(output_tensor(call_model(loaded, x)), before)
    for layer in record["layers"]:
        assert torch.equal(loaded.get_submodule(layer).input_scale, model.get_submodule(layer).input_scale)


@pytest.mark.parametrize("group_size", [None, 8])
def test_model_output_error_on_calibration_data_is_at_most_round_to_nearests(group_size):
    calibration = token_inputs(64, seed=2)
    reference = _build("llama")
    with torch.no_grad():
        expected = output_tensor(call_model(reference, calibration))

    def error(config) -> float:
        model = _build("llama")
        quantize_(model, config)
        with torch.no_grad():
            return float((output_tensor(call_model(model, calibration)) - expected).norm())

    awq = AWQ(bits=3, group_size=group_size, calibration_data=calibration)
    model = _build("llama")
    quantize_(model, awq)
    layers = list(get_log(model)[-1]["layers"])
    if group_size is None:
        rtn = Quantize(bits=3, scheme="affine", granularity="channel", filter_fn=lambda m, n: n in layers)
    else:  # round-to-nearest on the same grids: AWQ with alpha fixed at 0
        rtn = AWQ(bits=3, group_size=group_size, alpha=0, calibration_data=calibration)
    assert error(awq) <= error(rtn)


@pytest.mark.parametrize("config,message", [
    (AWQ(bits=4), "needs calibration_data"),
    (AWQ(bits=4, group_size=12, calibration_data=torch.randn(4, 1, 8, 8)), "group_size 12 does not divide"),
    (AWQ(bits=4, calibration_data=token_inputs(4)), "calibration batch 0 does not fit"),
    (AWQ(bits=4, layers=("nope",), calibration_data=torch.randn(4, 1, 8, 8)), "unknown layer name"),
])
def test_bad_input_is_one_line_and_leaves_the_model_untouched(config, message):
    assert_refused_untouched(_build("convnet"), lambda model: quantize_(model, config), message)


def test_a_layer_quantized_already_is_refused_and_config_values_are_checked():
    model = _build("user_mlp")
    data = torch.randn(8, 1, 8, 8)
    quantize_(model, AWQ(bits=4, grid=2, calibration_data=data))
    with pytest.raises(ConfigError, match="already carries FakeQuantize"):
        quantize_(model, AWQ(calibration_data=data))
    finalize_(model)
    with pytest.raises(ConfigError, match="already has an input scale"):
        quantize_(model, AWQ(calibration_data=data))
    for bad, message in (({"bits": 9}, "bits must be"), ({"group_size": 0}, "group_size must be"),
                         ({"grid": 0}, "grid must be"), ({"alpha": 2}, "alpha must be"),
                         ({"scheme": "odd"}, "unknown scheme"), ({"calibration": "percentile"}, "unknown calibration")):
        with pytest.raises(ConfigError, match=message):
            AWQ(**bad)
