"""Every conversion on every tiny model (tests/models.py) and the user's residual CNN: it converts
the layers it can (forward, backward, fewer weights, save/load restore it) or refuses in one line,
leaving the model untouched."""

import copy

import pytest
import torch

from netshrink.arch.low_rank import LowRank, low_rank_
from netshrink.arch.separable import Separable, separable_
from netshrink.codec.container import load, save
from netshrink.core import ConfigError, get_arch, get_log
from tests.arch.helpers import ResidualCNN, is_one_line, sample
from tests.models import TINY_MODELS

MODELS = {**TINY_MODELS, "residual_cnn": ResidualCNN}
CONVERSIONS = {
    "separable": (separable_, Separable()),
    "separable_m2_random": (separable_, Separable(multiplier=2, init="random")),
    "low_rank_rank": (low_rank_, LowRank(rank=2)),
    "low_rank_energy": (low_rank_, LowRank(energy=0.5)),
    "low_rank_budget": (low_rank_, LowRank(param_ratio=0.5)),
    "low_rank_spatial": (low_rank_, LowRank(rank=2, conv="spatial")),
}
#: models with no 3x3 conv of groups 1 and several input channels: separable_ must refuse them
NO_SEPARABLE_CONV = {"lenet300_100", "user_mlp", "user_resnet", "transformer"}


def _weights(model) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if n.endswith("weight"))


@pytest.mark.parametrize("conversion", sorted(CONVERSIONS))
@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_conversion_on_every_model(name, conversion, tmp_path):
    torch.manual_seed(0)
    model = MODELS[name]().eval()
    convert, config = CONVERSIONS[conversion]
    if conversion.startswith("separable") and name in NO_SEPARABLE_CONV:
        state = {k: v.clone() for k, v in model.state_dict().items()}
        with pytest.raises(ConfigError, match="nothing to convert") as info:
            convert(model, config)
        assert is_one_line(info.value) and get_log(model) == []
        assert state.keys() == model.state_dict().keys()
        assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
        return
    before = _weights(model)
    convert(model, config)
    record = get_log(model)[-1]
    assert record["layers"], record
    changed = sum(layer["weights_before"] - layer["weights_after"] for layer in record["layers"].values())
    assert changed > 0 or conversion == "separable_m2_random"
    assert _weights(model) == before - changed  # the logged counts are the model's

    x = sample()
    out = model(x)
    assert out.shape == (x.shape[0], 10)
    model.train()
    model(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    model.eval()

    path = tmp_path / "model.nsk"
    save(model, path)
    fresh = None if get_arch(model) is not None else MODELS[name]()
    loaded = load(path, model=fresh)
    assert torch.equal(loaded(x), model(x))
    assert [k for k in loaded.state_dict()] == [k for k in model.state_dict()]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_copy_converts_the_same_way(name):
    """The conversion depends on the weights alone: converting a deep copy gives equal weights."""
    torch.manual_seed(0)
    model = MODELS[name]()
    twin = copy.deepcopy(model)
    low_rank_(model, LowRank(param_ratio=0.5))
    low_rank_(twin, LowRank(param_ratio=0.5))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), twin.state_dict().values(), strict=True))
    assert get_log(model)[-1]["layers"] == get_log(twin)[-1]["layers"]
