"""Every quantization technique on every tiny model (tests/models.py) and on a model with an
Embedding: it trains, finalizes, saves to a smaller file and loads back to the same outputs."""

import pytest
import torch

import netshrink
from netshrink.core import finalize_
from netshrink.quant import AWQ, GPTQ, Binarize, Cluster, Quantize, SmoothQuant
from tests.models import TINY_MODELS
from tests.quant.helpers import TokenClassifier, round_trip

TECHNIQUES = {
    "cluster4": Cluster(bits=4),
    "cluster2_optimal": Cluster(bits=2, init="optimal"),
    "int8": Quantize(bits=8),
    "int4_affine_mse": Quantize(bits=4, scheme="affine", calibration="mse"),
    "int4_channel": Quantize(bits=4, granularity="channel", calibration="percentile"),
    "bf16": Quantize(bits="bf16"),
    "gptq4": GPTQ(bits=4, calibration_data=torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))),
    "awq4": AWQ(bits=4, grid=4, calibration_data=torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))),
    "smoothquant": SmoothQuant(calibration_data=torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))),
    "bwn": Binarize(method="bwn"),
    "binaryconnect_stochastic": Binarize(method="binaryconnect", stochastic=True),
}
# per-channel grids (int4_channel, GPTQ's) are not one tensor-wide grid, which is what the codec
# stores as integers today;
# bf16's byte planes cost more header than they save on the few thousand weights of some tiny
# models (the float formats' saving is tested on lenet300_100 in test_uniform)
NOT_SMALLER = {"int4_channel", "gptq4", "bf16", "awq4", "smoothquant"}
MODELS = {**TINY_MODELS, "token_classifier": TokenClassifier}


@pytest.mark.parametrize("technique", sorted(TECHNIQUES))
@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_technique_trains_finalizes_and_round_trips(model_name, technique, tmp_path):
    torch.manual_seed(0)
    model = MODELS[model_name]()
    torch.manual_seed(0)
    dense = MODELS[model_name]()
    netshrink.apply_(model, TECHNIQUES[technique])
    x = torch.rand(6, 1, 8, 8)
    model.train()
    loss = model(x).logsumexp(dim=1).sum()
    loss.backward()
    trained = [p for p in model.parameters() if p.grad is not None and bool(p.grad.abs().sum() > 0)]
    assert trained, "no trainable tensor gets a gradient through the quantized weights"
    finalize_(model)
    loaded, size = round_trip(model, MODELS[model_name](), tmp_path / "q.nsk")
    assert torch.equal(loaded(x), model.eval()(x))
    _, dense_size = round_trip(dense, MODELS[model_name](), tmp_path / "dense.nsk")
    if technique not in NOT_SMALLER:
        assert size < dense_size
