"""SparseGPT and Wanda (``prune_`` on calibration data): SparseGPT's layer output error is below
magnitude's and Wanda's, Wanda's below magnitude's when inputs differ in scale; N:M masks hold
exactly N nonzeros per M; masks hold through fit and under GPTQ; every tiny model and transformer
is pruned, saved and loaded identical; bad input is one line and leaves the model untouched."""

import dataclasses

import pytest
import torch
from torch import nn

import netshrink
from netshrink.calibration.hessian import LayerInputs
from netshrink.core import ConfigError, finalize_, get_log
from netshrink.core.model_io import call_model, output_tensor
from netshrink.prune import MagnitudePrune, SparseGPT, Wanda, mask_sparsity, prune_
from netshrink.prune.masks import current_mask
from netshrink.prune.patterns import lowest_mask, n_m_mask
from netshrink.prune.sparsegpt import sparsegpt_weight
from netshrink.prune.wanda import wanda_mask
from netshrink.quant import GPTQ, quantize_
from netshrink.train import FitConfig, fit
from tests.models import HF_MODELS, TINY_MODELS, sample_inputs, token_inputs
from tests.prune.helpers import pruned_weights
from tests.refusals import assert_refused_untouched

PRUNERS = {"sparsegpt": SparseGPT, "wanda": Wanda}


def _layer() -> tuple[torch.Tensor, torch.Tensor]:
    """A weight (16, 32) and 512 inputs driven by 4 latent factors, their 32 features scaled
    from 0.1 to 3 (so which inputs carry energy differs from which weights are large)."""
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(512, 4, generator=generator) @ torch.randn(4, 32, generator=generator)
    inputs = (inputs + 0.1 * torch.randn(512, 32, generator=generator)) * torch.linspace(0.1, 3, 32)
    return torch.randn(16, 32, generator=generator), inputs


@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
def test_sparsegpt_error_is_below_wandas_and_wandas_below_magnitudes(pattern):
    weight, inputs = _layer()
    stats, norms = LayerInputs(nn.Linear(32, 16)), LayerInputs(nn.Linear(32, 16), diagonal=True)
    stats.add(inputs)
    norms.add(inputs)
    pruned, mask, _ = sparsegpt_weight(weight, stats.hessian[0], SparseGPT(pattern=pattern))
    assert bool((pruned[mask == 0] == 0).all()) and float(mask.mean()) == 0.5
    wanda = weight * wanda_mask(weight, norms.feature_norms()[0], Wanda(pattern=pattern))
    magnitude = weight * (lowest_mask(weight.abs(), 0.5) if pattern == "unstructured" else n_m_mask(weight.abs(), 2, 4))
    errors = {name: float((inputs @ (weight - w).T).norm())
              for name, w in (("sparsegpt", pruned), ("wanda", wanda), ("magnitude", magnitude))}
    assert errors["sparsegpt"] < 0.6 * min(errors["wanda"], errors["magnitude"])
    assert errors["wanda"] < errors["magnitude"]


def _build(name: str) -> nn.Module:
    if name in HF_MODELS:
        pytest.importorskip("transformers")
    torch.manual_seed(0)
    return {**HF_MODELS, **TINY_MODELS}[name]().eval()


def _calibration(name: str, count: int = 16):
    return token_inputs(count, seed=2) if name in HF_MODELS else sample_inputs(name, count, seed=2)


@pytest.mark.parametrize("pruner", sorted(PRUNERS))
@pytest.mark.parametrize("name", ["llama", "convnet"])
def test_n_m_masks_keep_exactly_n_of_every_m_inputs(name, pruner, tmp_path):
    model = _build(name)
    first_conv = "features.0.0"  # 1 channel x 3 x 3 = 9 inputs: no whole groups of 4
    prune_(model, PRUNERS[pruner](pattern="1:4", calibration_data=_calibration(name),
                                  filter_fn=lambda module, layer: layer != first_conv))
    for layer in get_log(model)[-1]["layers"]:
        mask = current_mask(model.get_submodule(layer), "weight").flatten(1)
        assert bool((mask.reshape(mask.shape[0], -1, 4).sum(dim=2) == 1).all()), layer
        weight = model.get_submodule(layer).weight.detach().flatten(1)
        assert bool((weight[mask == 0] == 0).all()), layer  # (a kept weight of an input never seen is 0 too)


@pytest.mark.parametrize("pruner", sorted(PRUNERS))
@pytest.mark.parametrize("name", sorted({*TINY_MODELS, *HF_MODELS}))
def test_every_model_is_pruned_saved_and_loaded_identical(name, pruner, tmp_path):
    model, x = _build(name), sample_inputs(name, 4, seed=1)
    prune_(model, PRUNERS[pruner](sparsity=0.5, calibration_data=_calibration(name)))
    record = get_log(model)[-1]
    assert record["verb"] == pruner and record["layers"]
    for layer, details in record["layers"].items():
        assert details["kept"] == pytest.approx(0.5, abs=0.06)  # 9-input convolutions keep 5 of 9
        assert mask_sparsity(model)[f"{layer}.weight"] == pytest.approx(1 - details["kept"])
    finalize_(model)
    with torch.no_grad():
        before = output_tensor(call_model(model, x))
    netshrink.save(model, tmp_path / "m.nsk")
    loaded = netshrink.load(tmp_path / "m.nsk", model=None if name in ("convnet", "lenet5", "lenet300_100")
                            else _build(name))
    with torch.no_grad():
        assert torch.equal(output_tensor(call_model(loaded, x)), before)


def test_masks_hold_through_fit(digits):
    model = _build("user_mlp")
    prune_(model, SparseGPT(sparsity=0.6, calibration_data=digits.val.x[:64]))
    zeros = {n: w == 0 for n, w in pruned_weights(model).items()}
    fit(model, digits, FitConfig(epochs=1, batch_size=64, lr=0.05), progress=False)
    for name, weight in pruned_weights(model).items():
        assert bool((weight[zeros[name]] == 0).all()) and bool((weight[~zeros[name]] != 0).any()), name


@pytest.mark.parametrize("config", [SparseGPT(block_size=8), SparseGPT(pattern="2:4"), Wanda(pattern="2:4")],
                         ids=["sparsegpt", "sparsegpt_2_4", "wanda_2_4"])
def test_zeros_stay_zeros_under_gptq_and_earlier_masks_are_kept(config, tmp_path):
    model = _build("llama")
    prune_(model, MagnitudePrune(sparsity=0.25))
    earlier = {n: w == 0 for n, w in pruned_weights(model).items()}
    prune_(model, dataclasses.replace(config, calibration_data=_calibration("llama")))
    pruned = {n: w == 0 for n, w in pruned_weights(model).items()}
    assert all(bool(pruned[n][earlier[n]].all()) for n in get_log(model)[-1]["layers"])
    quantize_(model, GPTQ(bits=4, group_size=8, calibration_data=_calibration("llama")))
    finalize_(model)
    for name in get_log(model)[-2]["layers"]:
        assert bool((model.get_submodule(name).weight[pruned[name]] == 0).all()), name
    netshrink.save(model, tmp_path / "m.nsk")
    loaded = netshrink.load(tmp_path / "m.nsk", model=_build("llama"))
    x = token_inputs(2, seed=7)
    with torch.no_grad():
        assert torch.equal(output_tensor(call_model(loaded, x)), output_tensor(call_model(model, x)))


@pytest.mark.parametrize("config,message", [
    (SparseGPT(pattern="2:4", calibration_data=torch.randn(4, 1, 8, 8)), "has 25 inputs, not a multiple of 4"),
    (Wanda(pattern="3:8", calibration_data=torch.randn(4, 1, 8, 8)), "not a multiple of 8"),
    (Wanda(), "Wanda needs calibration_data"),
    (SparseGPT(calibration_data={"input_ids": torch.zeros(2, 3, dtype=torch.long)}), "does not fit"),
])
def test_bad_input_is_one_line_and_leaves_the_model_untouched(config, message):
    assert_refused_untouched(_build("lenet5"), lambda model: prune_(model, config), message)


@pytest.mark.parametrize("options,message", [
    ({"pattern": "4:2"}, "0 < N < M"), ({"pattern": "2-4"}, "'unstructured' or 'N:M'"),
    ({"pattern": "2:4", "sparsity": 0.7}, "fixes the sparsity at 0.5"), ({"sparsity": 1.0}, r"in \[0, 1\)"),
    ({"damp": 2}, "damp must be"), ({"batch_size": 0}, "batch_size must be"),
])
def test_config_values_are_checked_in_one_line(options, message):
    with pytest.raises(ConfigError, match=message) as info:
        SparseGPT(**options)
    assert "\n" not in str(info.value)
    assert SparseGPT(pattern="2:4", sparsity=0.5).fraction == 0.5 and Wanda(pattern="1:4").fraction == 0.75
