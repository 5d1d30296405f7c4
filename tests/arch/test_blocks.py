"""The efficient blocks and the tiny zoo students built from them."""

import pytest
import torch

from netshrink.arch.blocks import GhostBottleneck, GhostModule, ShuffleUnit, channel_shuffle
from netshrink.core import ConfigError
from netshrink.measure import count_macs, count_parameters
from netshrink.models import create, create_for_data

STUDENTS = ["mobilenet_tiny", "shufflenet_tiny", "ghostnet_tiny"]


def test_channel_shuffle_interleaves_the_groups():
    x = torch.arange(6.0).view(1, 6, 1, 1)
    assert channel_shuffle(x, 2).flatten().tolist() == [0, 3, 1, 4, 2, 5]
    assert channel_shuffle(x, 3).flatten().tolist() == [0, 2, 4, 1, 3, 5]
    assert torch.equal(channel_shuffle(channel_shuffle(x, 2), 3), x)  # shuffling by g then C/g undoes it


def test_shuffle_unit_adds_at_stride_1_and_concatenates_at_stride_2():
    x = torch.randn(2, 12, 8, 8)
    assert ShuffleUnit(12, 12, 1, groups=3)(x).shape == (2, 12, 8, 8)
    unit = ShuffleUnit(12, 24, 2, groups=3)
    assert unit(x).shape == (2, 24, 4, 4) and unit.expand[0].out_channels == 12
    assert unit.reduce[0].groups == 3 and unit.depthwise[0].groups == unit.depthwise[0].in_channels
    with pytest.raises(ValueError):
        ShuffleUnit(12, 24, 1)


def test_ghost_module_makes_half_its_maps_with_a_cheap_depthwise_conv():
    module = GhostModule(8, 16)
    assert module.primary[0].out_channels == 8 and module.cheap[0].groups == 8
    assert module(torch.randn(2, 8, 5, 5)).shape == (2, 16, 5, 5)
    assert GhostModule(8, 15)(torch.randn(1, 8, 3, 3)).shape == (1, 15, 3, 3)  # odd widths are cut
    wide = GhostModule(32, 64)  # about s = 2 times fewer weights than a 1x1 conv 32 -> 64 (Han et al. 2020 eq. 5)
    assert count_parameters(wide.primary[0]) + count_parameters(wide.cheap[0]) < 0.7 * 32 * 64


def test_ghost_bottleneck_downsamples_with_a_shortcut():
    block = GhostBottleneck(8, 16, 12, stride=2)
    assert block(torch.randn(2, 8, 8, 8)).shape == (2, 12, 4, 4)
    assert GhostBottleneck(8, 16, 8).shortcut is None


@pytest.mark.parametrize("name", STUDENTS)
def test_students_take_28x28_and_the_width_multiplier_scales_them(name):
    model = create(name)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    sizes = [count_parameters(create(name, width=w)) for w in (0.5, 1.0, 2.0)]
    assert sizes[0] < sizes[1] < sizes[2]
    convnet = create("convnet")
    assert sizes[1] < count_parameters(convnet) / 10
    assert count_macs(model, (1, 28, 28)) < count_macs(convnet, (1, 28, 28)) / 10
    assert create_for_data(name, (3, 32, 32), 7)(torch.randn(1, 3, 32, 32)).shape == (1, 7)


@pytest.mark.parametrize("name", STUDENTS)
def test_bad_width_is_a_one_line_error(name):
    with pytest.raises(ConfigError, match=f"{name} width must be a number in"):
        create(name, width=0)
