"""Asymmetric calibration (``asymmetric=True`` of GPTQ and SparseGPT): each layer reproduces the
original model's outputs, so on a deep stack the model's final outputs end closer to the
original's than with the plain layer-wise target; it runs on the tiny transformers, is logged, and
saves and loads identical."""

import copy

import pytest
import torch
from torch import nn

import netshrink
from netshrink.core import finalize_, get_log
from netshrink.core.model_io import call_model, output_tensor
from netshrink.prune import SparseGPT, prune_
from netshrink.quant import GPTQ
from tests.models import HF_MODELS, token_inputs


class _Deep(nn.Module):
    """Six blocks of Linear + Tanh, a list the block-by-block run walks."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(32, 32), nn.Tanh()) for _ in range(6))

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


def _inputs(count: int, seed: int) -> torch.Tensor:
    """Inputs of 32 features driven by 6 latent factors, plus noise."""
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(6, 32, generator=torch.Generator().manual_seed(99))
    return torch.randn(count, 6, generator=generator) @ mixing + 0.1 * torch.randn(count, 32, generator=generator)


@pytest.mark.parametrize("config", [SparseGPT(sparsity=0.5), SparseGPT(pattern="2:4"), GPTQ(bits=3)],
                         ids=["sparsegpt", "sparsegpt_2_4", "gptq_3bit"])
def test_the_final_outputs_end_closer_to_the_originals_on_held_out_inputs(config):
    torch.manual_seed(0)
    original = _Deep().eval()
    held_out = _inputs(256, seed=1)
    with torch.no_grad():
        want = original(held_out)
    errors = {}
    for asymmetric in (False, True):
        model = copy.deepcopy(original)
        netshrink.apply_(model, type(config)(**{**config.__dict__, "asymmetric": asymmetric,
                                                "calibration_data": _inputs(512, seed=2)}))
        assert get_log(model)[-1]["config"]["asymmetric"] is asymmetric
        with torch.no_grad():
            errors[asymmetric] = float((model(held_out) - want).norm())
    assert errors[True] < 0.9 * errors[False]


@pytest.mark.parametrize("name", sorted(HF_MODELS))
@pytest.mark.parametrize("verb", ["sparsegpt", "gptq"])
def test_it_runs_on_the_tiny_transformers_and_saves_and_loads_identical(name, verb, tmp_path):
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = HF_MODELS[name]().eval()
    data = token_inputs(16, seed=2)
    if verb == "sparsegpt":
        prune_(model, SparseGPT(sparsity=0.5, asymmetric=True, calibration_data=data))
    else:
        netshrink.quantize_(model, GPTQ(bits=4, asymmetric=True, calibration_data=data))
    finalize_(model)
    x = token_inputs(4, seed=1)
    with torch.no_grad():
        before = output_tensor(call_model(model, x))
    netshrink.save(model, tmp_path / "m.nsk")
    torch.manual_seed(0)
    loaded = netshrink.load(tmp_path / "m.nsk", model=HF_MODELS[name]())
    with torch.no_grad():
        assert torch.equal(output_tensor(call_model(loaded.eval(), x)), before)
