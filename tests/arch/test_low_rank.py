"""low_rank_: rank by energy or by global budget, transformer Linear layers, skips and refusals."""

import pytest
import torch
from torch import nn

from netshrink.arch.factorize import singular_values
from netshrink.arch.low_rank import LowRank, low_rank_
from netshrink.arch.separable import Separable, separable_
from netshrink.codec.container import load, save
from netshrink.core import ConfigError, get_log
from tests.arch.helpers import ResidualCNN, is_one_line, sample
from tests.models import TINY_MODELS


def _kept_energy(weight: torch.Tensor, kind: str, rank: int) -> float:
    power = singular_values(weight, kind) ** 2
    return float(power[:rank].sum() / power.sum())


@pytest.mark.parametrize("energy", [0.3, 0.6, 0.8])
def test_energy_gives_each_layer_the_least_rank_keeping_that_energy(energy):
    torch.manual_seed(0)
    model = TINY_MODELS["lenet5"]()
    originals = {n: m.weight.detach().clone() for n, m in model.named_modules()
                 if isinstance(m, (nn.Linear, nn.Conv2d))}
    low_rank_(model, LowRank(energy=energy))
    layers = get_log(model)[-1]["layers"]
    assert layers
    for name, layer in layers.items():
        kind, rank = layer["kind"], layer["rank"]
        assert _kept_energy(originals[name], kind, rank) >= energy - 1e-9
        assert rank == 1 or _kept_energy(originals[name], kind, rank - 1) < energy


@pytest.mark.parametrize("ratio", [0.2, 0.4, 0.7])
def test_a_global_budget_keeps_at_most_that_fraction_of_the_weights(ratio):
    torch.manual_seed(0)
    model = TINY_MODELS["lenet300_100"]()
    low_rank_(model, LowRank(param_ratio=ratio))
    layers = get_log(model)[-1]["layers"].values()
    before, after = sum(v["weights_before"] for v in layers), sum(v["weights_after"] for v in layers)
    assert after <= ratio * before
    cheapest = max(v["weights_after"] // v["rank"] for v in layers)  # one more singular value somewhere
    assert after + cheapest > ratio * before or all(v["ratio"] < 1.01 for v in layers)


def test_a_larger_budget_approximates_better():
    x = sample(64)
    errors = []
    for ratio in (0.1, 0.3, 0.6):
        torch.manual_seed(0)
        model = TINY_MODELS["lenet300_100"]()
        reference = model(x)
        low_rank_(model, LowRank(param_ratio=ratio))
        errors.append(float(torch.linalg.norm(model(x) - reference).detach()))
    assert errors[0] > errors[1] > errors[2]


def test_the_budget_spends_more_rank_on_a_layer_with_a_spread_spectrum():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(40, 40), nn.Linear(40, 40))
    with torch.no_grad():  # layer 0 has rank 2; layer 1 a flat spectrum
        model[0].weight.copy_(torch.randn(40, 2) @ torch.randn(2, 40))
    low_rank_(model, LowRank(param_ratio=0.5))
    layers = get_log(model)[-1]["layers"]
    assert layers["0"]["rank"] <= 2 < layers["1"]["rank"]


def test_transformer_linear_layers_are_factorized_and_attention_projections_skipped():
    torch.manual_seed(0)
    model = TINY_MODELS["transformer"]().eval()
    low_rank_(model, LowRank(rank=4, filter_fn=lambda m, n: n.startswith("encoder")))
    record = get_log(model)[-1]
    assert set(record["layers"]) == {"encoder.linear1", "encoder.linear2"}
    assert "MultiheadAttention" in record["skipped"]["encoder.self_attn.out_proj"]
    assert model.encoder.linear1.reduce.weight.shape == (4, 32) and model.encoder.linear1.expand.weight.shape == (64, 4)
    with pytest.raises(ConfigError, match="cannot convert layer 'encoder.self_attn.out_proj'"):
        low_rank_(TINY_MODELS["transformer"](), LowRank(rank=4, layers=("encoder.self_attn.out_proj",)))


def test_spatial_factorization_skips_pointwise_convs_with_a_note():
    torch.manual_seed(0)
    model = TINY_MODELS["user_resnet"]()
    low_rank_(model, LowRank(rank=2, conv="spatial"))
    record = get_log(model)[-1]
    assert "1x1 kernel" in record["skipped"]["pointwise"] and "grouped" in record["skipped"]["depthwise"]
    assert model.stem[0].vertical.kernel_size == (3, 1) and model.stem[0].horizontal.kernel_size == (1, 3)


def test_a_separable_model_factorized_again_saves_and_loads(tmp_path):
    torch.manual_seed(0)
    model = ResidualCNN().eval()
    separable_(model, Separable())
    low_rank_(model, LowRank(rank=3, filter_fn=lambda m, n: n.endswith("pointwise") or n == "head"))
    assert isinstance(model.conv1.pointwise, nn.Sequential)
    save(model, tmp_path / "m.nsk")
    loaded = load(tmp_path / "m.nsk", model=ResidualCNN())
    x = sample()
    assert torch.equal(loaded(x), model(x))


@pytest.mark.parametrize("config,message", [
    (dict(rank=50, layers=("fc2",)),
     "cannot convert layer 'fc2': rank 50 is larger than this layer allows (at most 10"),
    (dict(rank=10_000),
     "nothing to convert in LeNet5 with low_rank_: no selected layer can be converted; e.g. 'conv1': "
     "rank 10000 is larger than this layer allows"),
    (dict(rank=2, layers=("conv3",)), "unknown layer name(s) ['conv3'] in LeNet5"),
    (dict(rank=2, layers=("pool",)), "layer 'pool' is a MaxPool2d, not a Linear/Conv2d"),
    (dict(param_ratio=0.001), "param_ratio 0.001 is below what rank 1 in every layer keeps"),
])
def test_bad_requests_are_one_line_errors_that_leave_the_model_untouched(config, message):
    model = TINY_MODELS["lenet5"]()
    keys = list(model.state_dict())
    with pytest.raises(ConfigError) as info:
        low_rank_(model, LowRank(**config))
    assert message in str(info.value) and is_one_line(info.value)
    assert list(model.state_dict()) == keys and get_log(model) == []


@pytest.mark.parametrize("config,message", [
    (dict(energy=0.0), "energy must be in (0, 1]"),
    (dict(energy=1.5), "energy must be in (0, 1]"),
    (dict(param_ratio=-0.1), "param_ratio must be in (0, 1]"),
    (dict(rank=0), "rank must be an integer >= 1"),
    (dict(), "give exactly one of rank, energy, param_ratio"),
    (dict(rank=2, energy=0.5), "give exactly one of rank, energy, param_ratio"),
    (dict(rank=2, conv="depth"), "unknown conv factorization 'depth'"),
])
def test_bad_configs_are_refused(config, message):
    with pytest.raises(ConfigError) as info:
        LowRank(**config)
    assert message in str(info.value) and is_one_line(info.value)
