"""A user's own layer or function gets structured-pruned once it has a channel rule, and is
refused in one line without one."""

import pytest
import torch
from torch import fx, nn

from netshrink.codec.container import load, save
from netshrink.core import get_log
from netshrink.core.errors import ConfigError
from netshrink.prune import StructuredPrune, prune_, register_channel_rule
from netshrink.prune.channel_rules import index_select_, passthrough
from netshrink.prune.channels import Flow
from netshrink.prune.dependency import channel_groups
from tests.models import NUM_CLASSES
from tests.prune.helpers import outputs


class ChannelScale(nn.Module):
    """A learnable scale per channel of a conv map: a layer of the user's own, with no rule."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.rand(channels) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight.view(1, -1, 1, 1)


class RegisteredScale(ChannelScale):
    """The same layer, given a rule in the tests below (a subclass, so ``ChannelScale`` keeps none)."""


class ScaleWithoutResize(ChannelScale):
    """The same layer with a rule but no resize."""


def scale_rule(state, node, module):
    first = state.input(node)
    return Flow(state.members(first.layout, node.target, conv_map=True), first.ndim)


def scale_resize(module, keep):
    index_select_(module, "weight", 0, keep["channel"])


class ScaledNet(nn.Module):
    def __init__(self, scale: type[nn.Module]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.scale = scale(8)
        self.conv2 = nn.Conv2d(8, 6, 3, padding=1)
        self.head = nn.Linear(6, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.scale(self.conv1(x)))  # (B, 8, 8, 8)
        return self.head(torch.relu(self.conv2(x)).mean(dim=(2, 3)))


def test_a_user_layer_without_a_rule_is_refused_in_one_line_naming_it():
    torch.manual_seed(0)
    model = ScaledNet(ChannelScale)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError, match=r"cannot be removed: structured pruning does not follow them through "
                                          r"layer 'scale' \(ChannelScale\).*register_channel_rule") as error:
        prune_(model, StructuredPrune(amount=0.5, layers=("conv1",)))
    assert "\n" not in str(error.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    prune_(model, StructuredPrune(amount=0.5))  # the groups it does not touch are still pruned
    assert (model.conv1.out_channels, model.conv2.out_channels) == (8, 3)


def test_a_user_layer_with_a_rule_loses_the_same_channels_and_reloads(tmp_path):
    register_channel_rule(RegisteredScale, scale_rule, resize=scale_resize)
    torch.manual_seed(0)
    model = ScaledNet(RegisteredScale)
    dead = [0, 2, 5, 6]
    with torch.no_grad():  # channels that contribute nothing: their removal must change no output
        model.conv1.weight[dead] = 0
        model.conv1.bias[dead] = 0
    kept_scale = model.scale.weight.detach()[[1, 3, 4, 7]].clone()
    before = outputs(model)
    prune_(model, StructuredPrune(amount=0.5, layers=("conv1",)))
    assert (model.conv1.out_channels, model.conv2.in_channels) == (4, 4)
    assert torch.equal(model.scale.weight.detach(), kept_scale)
    assert torch.allclose(outputs(model), before, atol=1e-5)
    save(model, tmp_path / "scaled.nsk")
    loaded = load(tmp_path / "scaled.nsk", model=ScaledNet(RegisteredScale))  # the log's sizes rebuild it
    assert torch.equal(outputs(loaded), outputs(model))
    assert get_log(loaded)[-1]["shapes"]["scale"] == {"channel": 4}


def test_a_rule_without_resize_is_refused_before_anything_is_cut():
    register_channel_rule(ScaleWithoutResize, scale_rule)
    model = ScaledNet(ScaleWithoutResize)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError, match=r"cannot resize layer 'scale' \(ScaleWithoutResize\)"):
        prune_(model, StructuredPrune(amount=0.5))
    assert all(torch.equal(before[k], v) and before[k].shape == v.shape for k, v in model.state_dict().items())
    with pytest.raises(ConfigError, match="nn.Module subclass"):
        register_channel_rule(42, scale_rule)


def softsign_gate(x: torch.Tensor) -> torch.Tensor:
    return x / (1 + x.abs())


def hard_gate(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(0, 1)


fx.wrap("softsign_gate")  # calls stay one node, as a user's library function would
fx.wrap("hard_gate")


class Gated(nn.Module):
    def __init__(self, gate) -> None:
        super().__init__()
        self.gate = gate
        self.fc = nn.Linear(64, 16)
        self.head = nn.Linear(16, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.fc(x.flatten(1))
        return self.head(softsign_gate(hidden) if self.gate == "softsign" else hard_gate(hidden))


def test_a_function_is_followed_once_it_has_a_rule():
    register_channel_rule(softsign_gate, passthrough)
    assert [g.producers for g in channel_groups(Gated("softsign")) if g.prunable] == [["fc"]]
    blocked = [g for g in channel_groups(Gated("hard")) if "fc" in g.producers]
    assert not blocked[0].prunable and "hard_gate" in blocked[0].blocked_by
