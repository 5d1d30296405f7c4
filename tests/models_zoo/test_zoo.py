import pytest
import torch

from netshrink.core.errors import ConfigError
from netshrink.core.transform_log import get_arch
from netshrink.measure import count_parameters
from netshrink.models import create, create_for_data, list_models
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
    model = create(name, num_classes=7)
    arch = get_arch(model)
    assert arch == {"name": name, "kwargs": {"num_classes": 7}}
    rebuilt = create(arch["name"], **arch["kwargs"])
    assert get_arch(rebuilt) == arch
    assert {k: (t.shape, t.dtype) for k, t in rebuilt.state_dict().items()} == {
        k: (t.shape, t.dtype) for k, t in model.state_dict().items()}
    assert rebuilt(torch.randn(2, 1, 28, 28)).shape == (2, 7)


BUILT_IN_INPUTS = {"fashion-mnist": (1, 28, 28), "digits": (1, 8, 8)}


@pytest.mark.parametrize("data", sorted(BUILT_IN_INPUTS))
@pytest.mark.parametrize("name", list_models())
def test_every_zoo_model_runs_on_every_built_in_input(name, data):
    shape = BUILT_IN_INPUTS[data]
    model = create_for_data(name, shape, 10)
    out = model(torch.randn(3, *shape))
    assert out.shape == (3, 10)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    arch = get_arch(model)
    rebuilt = create(arch["name"], **arch["kwargs"])
    assert [t.shape for t in rebuilt.state_dict().values()] == [t.shape for t in model.state_dict().values()]


def test_lenet5_pads_only_inputs_too_small_for_the_papers_layout():
    assert create_for_data("lenet5", (1, 28, 28), 10).conv1.padding == (0, 0)  # Han et al. Table 3
    assert create_for_data("lenet5", (1, 16, 16), 10).conv1.padding == (0, 0)
    assert create_for_data("lenet5", (1, 15, 15), 10).conv1.padding == (2, 2)
    assert create_for_data("lenet5", (1, 8, 8), 10).fc1.in_features == 50 * 2 * 2
    assert create_for_data("lenet5", (1, 4, 4), 10)(torch.randn(1, 1, 4, 4)).shape == (1, 10)


@pytest.mark.parametrize("name,shape,message", [
    ("lenet5", (1, 3, 3), "lenet5 needs inputs of at least 4x4, got 3x3"),
    ("lenet5", (1, 8, 30), "lenet5 needs inputs of at least 16x16, got 8x30 with padding=0"),
    ("convnet", (1, 7, 28), "convnet needs inputs of at least 8x8, got 7x28"),
    ("convnet", (28, 28), "convnet takes input_shape as (channels, height, width)"),
])
def test_too_small_inputs_are_refused_naming_the_smallest(name, shape, message):
    kwargs = {"padding": 0} if "padding" in message else {}
    with pytest.raises(ConfigError) as info:
        create_for_data(name, shape, 10, **kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_create_for_data_sizes_fully_connected_models_by_flattened_input():
    model = create_for_data("lenet300_100", (3, 4, 5), 6)
    assert model.fc1.in_features == 60 and model.fc3.out_features == 6
    assert create_for_data("lenet300_100", (1, 8, 8), 10, in_features=64).fc1.in_features == 64


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
