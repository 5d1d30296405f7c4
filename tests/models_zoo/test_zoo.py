import pytest
import torch

from netshrink.core.errors import ConfigError
from netshrink.core.transform_log import get_arch
from netshrink.measure import count_parameters
from netshrink.models import create, list_models
from tests.models import INPUT_SHAPE, TINY_MODELS


def test_registry_lists_the_three_zoo_models():
    assert {"lenet300_100", "lenet5", "convnet"} <= set(list_models())


def test_deep_compression_layer_sizes():
    # Han et al. 2016, Tables 2 and 3: 267K and 431K weights
    assert count_parameters(create("lenet300_100")) == 266_610
    lenet5 = create("lenet5")
    assert [tuple(p.shape) for n, p in lenet5.named_parameters() if n.endswith("weight")] == [
        (20, 1, 5, 5), (50, 20, 5, 5), (500, 800), (10, 500)]
    assert 300_000 <= count_parameters(create("convnet")) <= 1_000_000


@pytest.mark.parametrize("name", ["lenet300_100", "lenet5", "convnet"])
def test_rebuildable_from_name_and_kwargs(name):
    torch.manual_seed(0)
    model = create(name, num_classes=7)
    arch = get_arch(model)
    assert arch == {"name": name, "kwargs": {"num_classes": 7}}
    rebuilt = create(arch["name"], **arch["kwargs"])
    rebuilt.load_state_dict(model.state_dict())
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(rebuilt.eval()(x), model.eval()(x))


def test_unknown_model_and_kwarg():
    with pytest.raises(ConfigError, match="unknown model"):
        create("resnet9000")
    with pytest.raises(ConfigError, match="takes no argument"):
        create("lenet5", depth=3)


def test_every_tiny_model_runs_forward_and_backward(tiny_model):
    x = torch.randn(4, *INPUT_SHAPE)
    out = tiny_model(x)
    assert out.shape == (4, 10)
    out.sum().backward()
    assert all(p.grad is not None for p in tiny_model.parameters())


def test_tiny_models_cover_zoo_and_user_classes():
    archs = [get_arch(build()) for build in TINY_MODELS.values()]
    assert sum(a is None for a in archs) >= 2 and sum(a is not None for a in archs) == 3
