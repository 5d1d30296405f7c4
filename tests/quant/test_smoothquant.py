"""SmoothQuant (``quantize_(model, SmoothQuant(...))``): on a model whose layers see a few outlier
input channels (as trained transformers do) its W8A8 output error is below naive W8A8's; the
smoothed layer computes the original function in full precision; saves and loads identical with
its input scales and activation grids; bad input is one line and leaves the model untouched."""

import pytest
import torch
from torch import nn

import netshrink
from netshrink.calibration.hessian import LayerInputs
from netshrink.core import ConfigError, finalize_, get_log
from netshrink.core.model_io import call_model, output_tensor
from netshrink.quant import Quantize, SmoothQuant, quantize_
from netshrink.quant.smoothquant import smoothing_scales
from tests.models import token_inputs

pytest.importorskip("transformers")


def _llama_with_outliers() -> nn.Module:
    """The tiny Llama with two channels of every RMSNorm 30x larger: the inputs of the attention and
    MLP projections get the outlier channels of section 3."""
    from tests.models import tiny_llama

    torch.manual_seed(0)
    model = tiny_llama().eval()
    with torch.no_grad():
        for layer in model.model.layers:
            layer.input_layernorm.weight[:2] *= 30
            layer.post_attention_layernorm.weight[:2] *= 30
    return model


def _error(config, data) -> tuple[float, list[str]]:
    model = _llama_with_outliers()
    with torch.no_grad():
        expected = output_tensor(call_model(_llama_with_outliers(), data))
    quantize_(model, config)
    with torch.no_grad():
        return float((output_tensor(call_model(model, data)) - expected).norm()), list(get_log(model)[-1]["layers"])


def test_w8a8_error_is_below_naive_w8a8s_when_inputs_have_outlier_channels():
    calibration, held_out = token_inputs(32, seed=2), token_inputs(16, seed=3)
    smooth, layers = _error(SmoothQuant(alpha=0.5, calibration_data=calibration), held_out)
    naive, _ = _error(Quantize(bits=8, granularity="channel", activation_bits=8, calibration_data=calibration,
                               filter_fn=lambda m, n: n in layers), held_out)
    assert smooth < 0.8 * naive


def test_smoothing_moves_the_outliers_into_the_weight_and_keeps_the_layer_function():
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(256, 8, generator=generator)
    inputs[:, 0] *= 50
    layer = nn.Linear(8, 4)
    stats = LayerInputs(layer, diagonal=True)
    stats.add(inputs)
    scale = smoothing_scales(layer, stats, 0.5)
    smoothed = inputs / scale
    spread = smoothed.abs().amax(dim=0)
    assert float(spread.max() / spread.min()) < float(inputs.abs().amax(dim=0).max() / inputs.abs().amax(dim=0).min())
    with torch.no_grad():
        assert torch.allclose(nn.functional.linear(smoothed, layer.weight * scale, layer.bias), layer(inputs),
                              atol=1e-4)


def test_saves_and_loads_identical_with_its_scales_and_activation_grids(tmp_path):
    model, x = _llama_with_outliers(), token_inputs(4, seed=1)
    quantize_(model, SmoothQuant(alpha=0.75, calibration_data=token_inputs(16, seed=2)))
    with torch.no_grad():
        before = output_tensor(call_model(model, x))
    finalize_(model)
    netshrink.save(model, tmp_path / "m.nsk")
    loaded = netshrink.load(tmp_path / "m.nsk", model=_llama_with_outliers())
    with torch.no_grad():
        assert torch.equal(output_tensor(call_model(loaded, x)), before)
    for layer in get_log(model)[-2]["layers"]:  # each layer divides by its scale, then rounds its input
        assert len(loaded.get_submodule(layer)._forward_pre_hooks) == 2


@pytest.mark.parametrize("config,message", [
    (SmoothQuant(), "needs calibration_data"),
    (SmoothQuant(calibration_data=torch.randn(4, 1, 8, 8)), "calibration batch 0 does not fit"),
])
def test_bad_input_is_one_line_and_leaves_the_model_untouched(config, message):
    model = _llama_with_outliers()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError, match=message) as info:
        quantize_(model, config)
    assert "\n" not in str(info.value)
    assert get_log(model) == [] and all(torch.equal(state[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("bad,message", [({"alpha": 1.5}, "alpha must be"), ({"activation_bits": 1},
                                         "activation_bits must be"), ({"scheme": "odd"}, "unknown scheme")])
def test_config_values_are_checked(bad, message):
    with pytest.raises(ConfigError, match=message):
        SmoothQuant(**bad)
