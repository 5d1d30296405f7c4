"""separable_: SVD initialisation, kept convolution settings, exact counts, skips and refusals."""

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from netshrink.arch.separable import Separable, separable_
from netshrink.core import ConfigError, get_log
from netshrink.models import check_rebuildable
from tests.arch.helpers import ResidualCNN, is_one_line
from tests.models import TINY_MODELS


def _relative_output_error(init: str) -> float:
    """A conv whose every input channel's kernel slice has rank 2 (a trained separable-friendly
    layer), converted with multiplier 2: the relative error of its output."""
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 10, 3, padding=1)
    with torch.no_grad():
        slices = torch.einsum("cor,crk->ock", torch.randn(6, 10, 2), torch.randn(6, 2, 9))  # (O, I, k*k)
        conv.weight.copy_(slices.reshape(10, 6, 3, 3))
    model = nn.Sequential(conv)
    x = torch.randn(8, 6, 7, 7)
    with torch.no_grad():
        reference = model(x)
        separable_(model, Separable(multiplier=2, init=init))
        return float(torch.linalg.norm(model(x) - reference) / torch.linalg.norm(reference))


def test_svd_initialisation_recovers_a_separable_kernel_that_random_initialisation_misses():
    assert _relative_output_error("svd") < 1e-4
    assert _relative_output_error("random") > 0.5


def test_stride_padding_dilation_and_bias_are_kept():
    torch.manual_seed(0)
    model = ResidualCNN()
    separable_(model, Separable(multiplier=3))
    depthwise, pointwise = model.down.depthwise, model.down.pointwise
    assert (depthwise.stride, depthwise.padding, depthwise.dilation) == ((2, 2), (2, 2), (2, 2))
    assert depthwise.groups == 8 and depthwise.out_channels == 24 and depthwise.bias is None
    assert pointwise.kernel_size == (1, 1) and pointwise.stride == (1, 1) and pointwise.bias is not None
    assert model.conv1.pointwise.bias is None  # conv1 had none
    assert model.stem.weight.shape == (8, 1, 3, 3)  # one input channel: left alone


def test_the_report_gives_exact_weight_counts_and_ratios_per_layer():
    torch.manual_seed(0)
    model = ResidualCNN()
    separable_(model, Separable(multiplier=2))
    record = get_log(model)[-1]
    assert set(record["layers"]) == {"conv1", "conv2", "down"}
    down = record["layers"]["down"]
    assert down["weights_before"] == 9 * 8 * 12 and down["weights_after"] == 2 * 9 * 8 + 2 * 8 * 12
    assert down["weights_after"] == model.down.depthwise.weight.numel() + model.down.pointwise.weight.numel()
    assert down["ratio"] == pytest.approx(down["weights_before"] / down["weights_after"], abs=1e-4)
    assert "already depthwise" in record["skipped"]["stem"]


class _Grouped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.grouped = nn.Conv2d(1, 4, 3, padding=1)
        self.split = nn.Conv2d(4, 8, 3, padding=1, groups=2)
        self.full = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        return self.full(self.split(self.grouped(x))).mean(dim=(2, 3))


def test_grouped_convolutions_are_skipped_with_a_note_and_refused_when_named():
    model = _Grouped()
    separable_(model, Separable())
    assert isinstance(model.full, nn.Sequential) and isinstance(model.split, nn.Conv2d)
    assert "grouped convolution (groups=2)" in get_log(model)[-1]["skipped"]["split"]
    with pytest.raises(ConfigError, match="cannot convert layer 'split': grouped") as info:
        separable_(_Grouped(), Separable(layers=("split",)))
    assert is_one_line(info.value)


@pytest.mark.parametrize("config,message", [
    (dict(layers=("conv9",)), "unknown layer name(s) ['conv9'] in ResidualCNN"),
    (dict(layers=("head",)), "layer 'head' is a Linear, not a Conv2d"),
    (dict(layers=("conv1",), multiplier=9), "multiplier 9 is larger than this layer allows (at most 8"),
    (dict(multiplier=10), "nothing to convert in ResidualCNN with separable_ (multiplier 10)"),
])
def test_bad_requests_are_one_line_errors_that_leave_the_model_untouched(config, message):
    model = ResidualCNN()
    keys = list(model.state_dict())
    with pytest.raises(ConfigError) as info:
        separable_(model, Separable(**config))
    assert message in str(info.value) and is_one_line(info.value)
    assert list(model.state_dict()) == keys and get_log(model) == []


@pytest.mark.parametrize("config,message", [
    (dict(multiplier=0), "multiplier must be an integer >= 1"),
    (dict(multiplier=1.5), "multiplier must be an integer >= 1"),
    (dict(init="zeros"), "unknown init 'zeros'"),
    (dict(layers=()), "layers must be a non-empty list"),
])
def test_bad_configs_are_refused(config, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        Separable(**config)


def test_a_model_under_parametrizations_is_refused():
    class Double(nn.Module):
        def forward(self, w):
            return 2 * w

    model = ResidualCNN()
    parametrize.register_parametrization(model.conv1, "weight", Double())
    with pytest.raises(ConfigError, match="finalize_"):
        separable_(model, Separable())


def test_the_logged_config_round_trips_and_rebuilds_on_the_meta_device():
    model = TINY_MODELS["convnet"]()
    separable_(model, Separable(multiplier=2, filter_fn=lambda m, n: n != "features.1.0"))
    record = get_log(model)[-1]
    assert record["config"] == {"type": "Separable", "version": 1, "multiplier": 2, "init": "svd", "layers": None}
    assert "features.1.0" not in record["layers"] and len(record["layers"]) == 3
    arch = model.netshrink_arch
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    check_rebuildable(arch["name"], arch["kwargs"], shapes, get_log(model))
    with pytest.raises(ConfigError):
        check_rebuildable(arch["name"], arch["kwargs"], shapes, [])
