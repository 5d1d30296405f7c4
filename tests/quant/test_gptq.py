"""GPTQ (``quantize_(model, GPTQ(...))``): on correlated inputs its layer output error is below
round-to-nearest's on the same kind of grid; its weights lie on per-channel or per-group integer
grids; it runs on the tiny transformers and CNNs, saves and loads identical; bad input is one line
and leaves the model untouched."""

import pytest
import torch
from torch import nn

import netshrink
from netshrink.calibration.hessian import LayerInputs
from netshrink.codec.inspect import inspect_file
from netshrink.core import ConfigError, finalize_, get_log
from netshrink.core.model_io import call_model, output_tensor
from netshrink.quant import GPTQ, Quantize, quantize_
from netshrink.quant.calibration import Grid, calibrate
from netshrink.quant.gptq import gptq_weight
from tests.models import HF_MODELS, TINY_MODELS, sample_inputs, token_inputs
from tests.refusals import assert_refused_untouched

SETTINGS = {"channel": {}, "group": {"group_size": 8}, "group_act_order": {"group_size": 8, "act_order": True},
            "channel_act_order_symmetric": {"act_order": True, "scheme": "symmetric"}}


def _correlated_layer() -> tuple[torch.Tensor, torch.Tensor]:
    """A weight (16, 32) and 512 inputs of 32 features driven by 4 latent factors (plus noise)."""
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(512, 4, generator=generator) @ torch.randn(4, 32, generator=generator)
    inputs += 0.1 * torch.randn(512, 32, generator=generator)
    return torch.randn(16, 32, generator=generator), inputs


def _round_to_nearest(weight: torch.Tensor, bits: int, scheme: str, group_size: int | None) -> torch.Tensor:
    group = group_size or weight.shape[1]
    grid = calibrate(weight.reshape(-1, group), bits, scheme, True, "minmax")
    return Grid(grid.scale, grid.zero_point, grid.qmin, grid.qmax, group).fake_quantize(weight)


def _assert_on_grid(weight: torch.Tensor, grid: Grid, bits: int) -> None:
    assert torch.equal(grid.fake_quantize(weight), weight)
    group = grid.group_size or weight[0].numel()
    for row in weight.reshape(-1, group):
        assert torch.unique(row).numel() <= 2 ** bits


@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_output_error_is_below_round_to_nearests_on_correlated_inputs(setting):
    weight, inputs = _correlated_layer()
    stats = LayerInputs(nn.Linear(32, 16))
    stats.add(inputs)
    config = GPTQ(bits=3, **SETTINGS[setting])
    quantized, grid, loss = gptq_weight(weight, stats.hessian[0], config)
    _assert_on_grid(quantized, grid, 3)
    rounded = _round_to_nearest(weight, 3, config.scheme, config.group_size)
    gptq_error = (inputs @ (weight - quantized).T).norm()
    rtn_error = (inputs @ (weight - rounded).T).norm()
    assert gptq_error < 0.6 * rtn_error
    # the logged loss estimates the output error: ||dW X||^2 / n, up to the dampening
    assert 0.5 < loss / float(gptq_error ** 2 / len(inputs)) < 2


def test_lazy_batch_updates_give_the_result_of_updating_every_column_at_once():
    weight, inputs = _correlated_layer()
    stats = LayerInputs(nn.Linear(32, 16))
    stats.add(inputs)
    errors = [float((inputs @ (weight - gptq_weight(weight, stats.hessian[0], GPTQ(bits=3, block_size=size))[0]).T)
                    .norm()) for size in (128, 8, 3)]
    assert errors == pytest.approx([errors[0]] * 3, rel=1e-3)


def test_a_pruning_mask_is_kept_and_its_errors_are_compensated():
    weight, inputs = _correlated_layer()
    stats = LayerInputs(nn.Linear(32, 16))
    stats.add(inputs)
    mask = (torch.rand(16, 32, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    quantized, grid, _ = gptq_weight(weight * mask, stats.hessian[0], GPTQ(bits=4), mask)
    assert bool((quantized[mask == 0] == 0).all())
    _assert_on_grid(quantized, grid, 4)


def test_the_zeros_of_a_layer_pruned_and_finalized_before_stay_zeros():
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = HF_MODELS["llama"]().eval()
    netshrink.prune_(model, netshrink.MagnitudePrune(sparsity=0.5))
    finalize_(model)  # the masks are gone; only the zeros say where they were
    zeros = {n: m.weight == 0 for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    quantize_(model, GPTQ(bits=4, group_size=8, calibration_data=token_inputs(8, seed=2)))
    finalize_(model)
    for name, zero in zeros.items():
        if name in get_log(model)[-2]["layers"]:
            assert bool((model.get_submodule(name).weight[zero] == 0).all()), name


def _build(name: str) -> nn.Module:
    if name in HF_MODELS:
        pytest.importorskip("transformers")
    torch.manual_seed(0)
    return {**HF_MODELS, **TINY_MODELS}[name]().eval()


@pytest.mark.parametrize("name,group_size", [("llama", 8), ("bert", 8), ("convnet", None), ("user_resnet", None)])
def test_runs_on_transformers_and_cnns_and_saves_and_loads_identical(name, group_size, tmp_path):
    model, x = _build(name), sample_inputs(name, 4, seed=1)
    calibration = token_inputs(16, seed=2) if name in HF_MODELS else sample_inputs(name, 32, seed=2)
    quantize_(model, GPTQ(bits=4, group_size=group_size, calibration_data=calibration))
    record = get_log(model)[-1]
    assert record["verb"] == "gptq" and record["blocks"] == {"llama": "model.layers", "bert": "bert.encoder.layer",
                                                              "convnet": "features", "user_resnet": "stem"}[name]
    with torch.no_grad():
        before = output_tensor(call_model(model, x))
    grids = {n: m.parametrizations.weight[0] for n, m in model.named_modules() if n in record["layers"]}
    finalize_(model)
    for layer, fake in grids.items():
        weight = model.get_submodule(layer).weight.detach()
        grid = Grid(fake.scale, fake.zero_point, fake.qmin, fake.qmax, fake.group_size)
        _assert_on_grid(weight.flatten(1), grid, 4)
    netshrink.save(model, tmp_path / "m.nsk")
    encodings = {row["name"]: row for row in inspect_file(tmp_path / "m.nsk")}
    for layer in record["layers"]:  # stored as 4-bit integers, not floats
        assert encodings[f"{layer}.weight"]["encoding"] == "group_int", layer
    loaded = netshrink.load(tmp_path / "m.nsk", model=None if name == "convnet" else _build(name))
    with torch.no_grad():
        assert torch.equal(output_tensor(call_model(loaded, x)), before)
    assert get_log(loaded)[-2]["layers"] == record["layers"]


def _llama_output_error(config) -> tuple[float, list[str]]:
    model = _build("llama")
    reference = output_tensor(call_model(_build("llama"), token_inputs(8, seed=5))).detach()
    quantize_(model, config)
    with torch.no_grad():
        error = float((output_tensor(call_model(model, token_inputs(8, seed=5))) - reference).norm())
    return error, list(get_log(model)[-1]["layers"])


def test_its_model_output_error_is_below_round_to_nearests_on_calibration_like_data():
    gptq, layers = _llama_output_error(GPTQ(bits=3, calibration_data=token_inputs(64, seed=2)))
    rtn, _ = _llama_output_error(Quantize(bits=3, scheme="affine", granularity="channel",
                                          filter_fn=lambda m, n: n in layers))
    assert gptq < rtn


@pytest.mark.parametrize("config,message", [
    (GPTQ(bits=4), "needs calibration_data"),
    (GPTQ(bits=4, group_size=12, calibration_data=torch.randn(4, 1, 8, 8)), "group_size 12 does not divide"),
    (GPTQ(bits=4, calibration_data=token_inputs(4)), "calibration batch 0 does not fit"),
    (GPTQ(bits=4, calibration_data=torch.randn(4, 1, 7, 7)), "calibration batch 0 does not fit"),
    (GPTQ(bits=4, layers=("nope",), calibration_data=torch.randn(4, 1, 8, 8)), "unknown layer name"),
])
def test_bad_input_is_one_line_and_leaves_the_model_untouched(config, message):
    assert_refused_untouched(_build("convnet"), lambda model: quantize_(model, config), message)


def test_a_layer_already_quantized_is_refused_and_config_values_are_checked():
    model = _build("user_mlp")
    quantize_(model, Quantize(bits=8))
    with pytest.raises(ConfigError, match="already carries FakeQuantize"):
        quantize_(model, GPTQ(calibration_data=torch.randn(4, 1, 8, 8)))
    for bad, message in (({"bits": 9}, "bits must be"), ({"group_size": 0}, "group_size must be"),
                         ({"damp": -0.1}, "damp must be"), ({"scheme": "odd"}, "unknown scheme"),
                         ({"act_order": "yes"}, "act_order must be")):
        with pytest.raises(ConfigError, match=message):
            GPTQ(**bad)
    with pytest.raises(ConfigError, match="quantize_ takes a quantization config"):
        quantize_(model, netshrink.MagnitudePrune())
