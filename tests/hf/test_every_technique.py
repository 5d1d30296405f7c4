"""Every technique on the tiny Hugging Face models (tests/models.py ``HF_MODELS``: token ids and an
attention mask in, a ``ModelOutput`` out): it runs, trains through its parametrizations, finalizes,
saves and loads back into a fresh model with identical outputs, or it refuses in one line and
leaves the model untouched."""

import pytest
import torch

import netshrink
from netshrink.core import NetshrinkError, finalize_, get_log, techniques
from netshrink.core.model_io import call_model, output_tensor
from netshrink.prune.layer_drop import LayerDrop
from netshrink.prune.transformer import TransformerPrune
from tests.models import HF_MODELS, token_inputs

pytest.importorskip("transformers")

#: one config per technique, keyed by the technique's registered name
CONFIGS = {
    "magnitude_prune": netshrink.MagnitudePrune(sparsity=0.5),
    "structured_prune": netshrink.StructuredPrune(amount=0.5),
    "transformer_prune": TransformerPrune(heads=0.5, neurons=0.5, importance="michel",
                                          calibration_data=token_inputs(8, seed=1)),
    "layer_drop": LayerDrop(every_other=True),
    "sparsegpt": netshrink.SparseGPT(sparsity=0.5, calibration_data=token_inputs(8, seed=1)),
    "wanda": netshrink.Wanda(pattern="2:4", calibration_data=token_inputs(8, seed=1)),
    "quantize": netshrink.Quantize(bits=4, granularity="channel", activation_bits=8,
                                   calibration_data=token_inputs(8, seed=1)),
    "gptq": netshrink.GPTQ(bits=4, group_size=8, act_order=True, calibration_data=token_inputs(8, seed=1)),
    "awq": netshrink.AWQ(bits=4, group_size=8, calibration_data=token_inputs(8, seed=1)),
    "smoothquant": netshrink.SmoothQuant(alpha=0.5, calibration_data=token_inputs(8, seed=1)),
    "cluster": netshrink.Cluster(bits=3),
    "binarize": netshrink.Binarize(method="bwn"),
    "low_rank": netshrink.LowRank(rank=2),
    "separable": netshrink.Separable(),
    "slimmable": netshrink.Slimmable(widths=(0.5, 1.0)),
    "early_exit": netshrink.EarlyExit(after=("dropout",), input_shape=(8,)),
}
#: what each refusal must say (the same on both models)
REFUSALS = {
    "structured_prune": "cannot trace",
    "separable": "no Conv2d layer",
    "slimmable": "outside Linear/Conv2d/BatchNorm",
    "early_exit": "cannot trace|no block named",
}


def _build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return HF_MODELS[name]().eval()


def test_every_builtin_technique_has_a_config_here():
    builtin = {t.name for t in techniques() if t.handler.__module__.startswith("netshrink.") and t.verb is not None}
    assert builtin == set(CONFIGS)


@pytest.mark.parametrize("technique", sorted(CONFIGS))
@pytest.mark.parametrize("model_name", sorted(HF_MODELS))
def test_technique_runs_saves_and_loads_or_refuses_in_one_line(model_name, technique, tmp_path):
    model, x = _build(model_name), token_inputs()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    if technique in REFUSALS:
        with pytest.raises(NetshrinkError, match=REFUSALS[technique]) as info:
            netshrink.apply_(model, CONFIGS[technique])
        assert "\n" not in str(info.value)
        assert get_log(model) == [] and model.state_dict().keys() == state.keys()
        assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
        return
    netshrink.apply_(model, CONFIGS[technique])
    model.train()
    output_tensor(call_model(model, x)).logsumexp(dim=-1).sum().backward()
    assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in model.parameters())
    model.eval()
    finalize_(model)
    netshrink.save(model, tmp_path / "m.nsk")
    loaded = netshrink.load(tmp_path / "m.nsk", model=_build(model_name))
    with torch.no_grad():
        assert torch.equal(output_tensor(call_model(loaded, x)), output_tensor(call_model(model, x)))
