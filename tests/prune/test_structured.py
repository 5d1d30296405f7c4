import pytest
import torch
from torch import nn

from netshrink.core import get_log
from netshrink.core.errors import ConfigError
from netshrink.prune import MagnitudePrune, StructuredPrune, prune_
from netshrink.prune.dependency import channel_groups
from netshrink.prune.structured import channel_scores
from netshrink.train import FitConfig, fit
from tests.models import INPUT_SHAPE, NUM_CLASSES
from tests.prune.helpers import outputs, round_trip


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def _kill(model: nn.Module, group, channels: list[int]) -> None:
    """Make ``channels`` of ``group`` contribute nothing: zero what produces them (weights, biases,
    BatchNorm scale and shift)."""
    modules = dict(model.named_modules())
    for entry in group.entries:
        module = modules[entry.module]
        index = torch.tensor([entry.offset + c for c in channels])
        if entry.role == "out" or (entry.role == "channel" and not isinstance(module, nn.modules.batchnorm._BatchNorm)):
            module.weight[index] = 0
            if module.bias is not None:
                module.bias[index] = 0
        elif entry.role == "channel":
            module.weight[index] = 0
            module.bias[index] = 0


def test_removing_dead_channels_leaves_the_outputs_unchanged(tiny_model):
    """The defining property: cutting channels that contribute nothing out of every layer that
    holds them (producers, BatchNorms, depthwise convs, consumers, residual partners) changes no
    output. So every index of every dependent tensor was cut consistently."""
    groups = [g for g in channel_groups(tiny_model) if g.prunable]
    assert groups
    for group in groups:
        _kill(tiny_model, group, list(range(0, group.size, 2)))  # half of each group, the even ones
    before = outputs(tiny_model)
    count = _count(tiny_model)
    prune_(tiny_model, StructuredPrune(amount=0.5))
    assert _count(tiny_model) < count
    assert torch.allclose(outputs(tiny_model), before, atol=1e-5)


def test_every_model_shrinks_trains_saves_and_loads(named_model, tmp_path, digits):
    name, model = named_model
    count = _count(model)
    prune_(model, StructuredPrune(amount=0.5, ranking="l2"))
    assert _count(model) < 0.8 * count
    fit(model, digits, FitConfig(epochs=1, batch_size=64, lr=0.02), progress=False)
    loaded = round_trip(model, name, tmp_path / "small.nsk")
    assert torch.equal(outputs(loaded), outputs(model))
    assert outputs(model).shape == (6, NUM_CLASSES)
    assert get_log(loaded)[-1]["verb"] == "structured_prune"


def test_residual_partners_lose_the_same_channels():
    from tests.models import UserResNet

    model = UserResNet()
    prune_(model, StructuredPrune(amount=0.25))
    widths = {model.stem[0].out_channels, model.stem[1].num_features, model.depthwise.out_channels,
              model.depthwise.groups, model.pointwise.in_channels, model.pointwise.out_channels,
              model.bn.num_features, model.head.in_features}
    assert widths == {12}


def test_flatten_removes_each_channels_block_of_linear_inputs():
    from tests.models import TINY_MODELS

    model = TINY_MODELS["lenet5"]()
    spread = model.fc1.in_features // model.conv2.out_channels
    prune_(model, StructuredPrune(amount=0.5, layers=("conv2",)))
    assert model.conv2.out_channels == 25 and model.fc1.in_features == 25 * spread
    assert model.conv1.out_channels == 20  # only the named layer's group


def test_the_transformer_loses_mlp_units_but_keeps_its_model_width():
    from tests.models import TINY_MODELS

    model = TINY_MODELS["transformer"]()
    prune_(model, StructuredPrune(amount=0.5))
    assert model.encoder.linear1.out_features == model.encoder.linear2.in_features == 32
    assert model.embed.out_features == model.encoder.linear2.out_features == 32  # tied by the residuals


class Branches(nn.Module):
    """Two conv branches concatenated along channels, then a conv reading both."""

    def __init__(self) -> None:
        super().__init__()
        self.left = nn.Conv2d(1, 6, 3, padding=1)
        self.right = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(10)
        self.mix = nn.Conv2d(10, 8, 1)
        self.head = nn.Linear(8, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(torch.cat([self.left(x), self.right(x)], dim=1)))  # (B, 10, H, W)
        return self.head(self.mix(x).mean(dim=(2, 3)))


def test_concat_maps_each_branch_to_its_slice_of_the_consumer():
    torch.manual_seed(0)
    model = Branches().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-1, 1)
        model.bn.running_var.uniform_(0.5, 2)
    groups = {tuple(g.producers): g for g in channel_groups(model) if g.prunable}
    _kill(model, groups[("left",)], [1, 3, 4])
    _kill(model, groups[("right",)], [0, 2])
    _kill(model, groups[("mix",)], [0, 3, 5, 6])
    before = outputs(model)
    prune_(model, StructuredPrune(amount=0.5))
    assert (model.left.out_channels, model.right.out_channels, model.bn.num_features, model.mix.in_channels,
            model.mix.out_channels) == (3, 2, 5, 5, 4)
    assert torch.allclose(outputs(model), before, atol=1e-5)


def test_bn_ranking_removes_the_channels_with_the_smallest_scale():
    from tests.models import TINY_MODELS

    model = TINY_MODELS["convnet"]()
    bn = model.features[0][1]
    with torch.no_grad():
        bn.weight.copy_(torch.arange(1.0, 9.0))
        model.features[0][0].weight[:4] *= 100  # l1 would keep these
    group = next(g for g in channel_groups(model) if "features.0.0" in g.producers)
    scores, used = channel_scores(model, group, "bn")
    assert used == "bn" and torch.equal(scores, torch.arange(1.0, 9.0))
    kept_scale = bn.weight[4:].detach().clone()
    prune_(model, StructuredPrune(amount=0.5, ranking="bn", layers=("features.0.0",)))
    assert torch.equal(model.features[0][1].weight.detach(), kept_scale)


class DataDependent(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if x.sum() > 0 else -x


class Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 32)
        self.gate = DataDependent()
        self.head = nn.Linear(32, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.gate(self.fc(x.flatten(1))))


def test_an_untraceable_model_is_a_one_line_error_naming_the_layer_and_is_left_untouched():
    model = Untraceable()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError, match=r"cannot trace layer 'gate' \(DataDependent\)") as error:
        prune_(model, StructuredPrune(amount=0.5))
    assert "\n" not in str(error.value)
    assert all(torch.equal(before[k], v) and before[k].shape == v.shape for k, v in model.state_dict().items())
    assert get_log(model) == []


def test_bad_input_is_a_one_line_error(tiny_model):
    for bad in (1.0, -0.5):
        with pytest.raises(ConfigError, match=r"amount must be a number in \[0, 1\)"):
            StructuredPrune(amount=bad)
    with pytest.raises(ConfigError, match="unknown ranking"):
        StructuredPrune(ranking="random")
    with pytest.raises(ConfigError, match=r"no layer named \['missing'\]"):
        prune_(tiny_model, StructuredPrune(layers=("missing",)))
    with pytest.raises(ConfigError, match="nothing to prune"):
        prune_(tiny_model, StructuredPrune(filter_fn=lambda module, name: False))
    prune_(tiny_model, MagnitudePrune(sparsity=0.5))
    with pytest.raises(ConfigError, match="finalize_"):
        prune_(tiny_model, StructuredPrune())


def test_the_output_layer_cannot_be_named():
    from tests.models import TINY_MODELS

    with pytest.raises(ConfigError, match="cannot be removed"):
        prune_(TINY_MODELS["lenet300_100"](), StructuredPrune(layers=("fc3",)))


def test_rebuild_works_on_the_meta_device():
    from netshrink.models import check_rebuildable
    from tests.models import TINY_MODELS

    model = TINY_MODELS["convnet"]()
    prune_(model, StructuredPrune(amount=0.5))
    arch = model.netshrink_arch
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    check_rebuildable(arch["name"], arch["kwargs"], shapes, get_log(model))  # raises when it does not fit
    with pytest.raises(ConfigError):
        check_rebuildable(arch["name"], arch["kwargs"], shapes, [])


def test_input_shape_is_unchanged():
    from tests.models import TINY_MODELS

    model = TINY_MODELS["convnet"]()
    prune_(model, StructuredPrune(amount=0.5))
    assert model(torch.randn(2, *INPUT_SHAPE)).shape == (2, NUM_CLASSES)


class SharedLayer(nn.Module):
    """One Linear applied twice: its neurons cannot be cut for one call alone."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 64)
        self.hidden = nn.Linear(64, 16)
        self.head = nn.Linear(16, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.hidden(self.fc(torch.relu(self.fc(x.flatten(1)))))))


def test_a_layer_called_twice_is_left_whole():
    model = SharedLayer()
    before = outputs(model)
    prune_(model, StructuredPrune(amount=0.5))
    assert (model.fc.out_features, model.fc.in_features, model.hidden.out_features) == (64, 64, 8)
    assert outputs(model).shape == before.shape
