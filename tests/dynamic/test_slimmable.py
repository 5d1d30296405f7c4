"""Slimmable widths: every tiny model converted or refused in one line, shared weights, a
BatchNorm per width, the sandwich rule through fit, save/load, the zoo's slimmable convnet."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from netshrink.codec.container import load, save
from netshrink.core.errors import ConfigError
from netshrink.dynamic import Slimmable, sandwich_loss, set_width, slimmable_, widths_of
from netshrink.dynamic.slimmable import SwitchableBatchNorm
from netshrink.measure import evaluate
from netshrink.models import create
from netshrink.train import FitConfig, fit
from tests.dynamic.conftest import NOT_SLIMMABLE

WIDTHS = (0.25, 0.5, 0.75, 1.0)


def _output_units(model, x):
    """Output size of every Linear / Conv2d in one forward pass, by qualified name."""
    units, hooks = {}, []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            hooks.append(module.register_forward_hook(
                lambda m, args, out, name=name: units.__setitem__(name, out.shape[1])))
    model(x)
    for hook in hooks:
        hook.remove()
    return units


def test_every_tiny_model_is_slimmed_or_refused_in_one_line(named_model, digits):
    name, model = named_model
    x = digits.val.x[:8]
    if name in NOT_SLIMMABLE:
        with pytest.raises(ConfigError, match=NOT_SLIMMABLE[name]) as info:
            slimmable_(model, Slimmable(widths=WIDTHS))
        assert "\n" not in str(info.value)
        return
    before, full_units = model(x), _output_units(model, x)
    params = {id(p) for p in model.parameters()}
    slimmable_(model, Slimmable(widths=WIDTHS))
    assert {id(p) for p in model.parameters()} == params  # the same Parameters: optimizers stay valid
    assert torch.allclose(model(x), before, atol=1e-5)  # width 1 is the original network
    last = list(full_units)[-1]
    for width in WIDTHS:
        set_width(model, width)
        units = _output_units(model, x)
        assert units[last] == 10
        assert all(units[n] == max(1, round(width * full)) for n, full in full_units.items() if n != last)


def test_each_width_keeps_its_own_batchnorm_statistics(digits):
    model = create("convnet", input_shape=[1, 8, 8], widths=[8, 8, 16, 16, 16], hidden=32)
    slimmable_(model, Slimmable(widths=WIDTHS))
    bn = next(m for m in model.modules() if isinstance(m, SwitchableBatchNorm))
    model.train()
    set_width(model, 0.5)
    model(digits.train.x[:32])
    moved = [not torch.equal(s.running_mean, torch.zeros_like(s.running_mean)) for s in bn.stats]
    assert moved == [False, True, False, False]
    assert [s.num_features for s in bn.stats] == [2, 4, 6, 8]


def test_sandwich_loss_is_the_widest_cross_entropy_plus_the_narrower_widths_taught_by_it(digits):
    torch.manual_seed(0)
    model = create("lenet300_100", in_features=64)
    slimmable_(model, Slimmable(widths=WIDTHS))
    x, y = digits.train.x[:16], digits.train.y[:16]
    logits = model(x)
    set_width(model, 0.25)
    narrow = model(x)
    set_width(model, 1.0)
    soft = F.kl_div(F.log_softmax(narrow, dim=-1), F.softmax(logits.detach(), dim=-1), reduction="batchmean")
    wide_ce, narrow_ce = F.cross_entropy(logits, y), F.cross_entropy(narrow, y)
    for alpha in (1.0, 0.3, 0.0):  # 1: in-place distillation alone; 0: the labels alone
        loss = sandwich_loss(model, random_widths=0, alpha=alpha)(logits, x, y)
        assert torch.allclose(loss, wide_ce + alpha * soft + (1 - alpha) * narrow_ce)
    for bad in (-0.1, 1.5, True, "0.5"):
        with pytest.raises(ConfigError, match="alpha"):
            sandwich_loss(model, alpha=bad)
    set_width(model, 0.5)
    with pytest.raises(ConfigError, match="widest width"):
        sandwich_loss(model)(logits, x, y)


def test_sandwich_rule_through_fit_trains_every_width(small):
    torch.manual_seed(0)
    train, val = small
    model = create("slimmable_convnet", input_shape=[1, 8, 8], widths=[16, 16, 32, 32, 32], hidden=64, dropout=0.0)
    fit(model, train, FitConfig(epochs=4, batch_size=32, lr=0.05), loss_fn=sandwich_loss(model), val=val,
        progress=False)
    for stats in next(m for m in model.modules() if isinstance(m, SwitchableBatchNorm)).stats:
        assert stats.num_batches_tracked > 0  # every width ran in training (the sandwich's four passes)
    accuracies = []
    for width in WIDTHS:
        set_width(model, width)
        accuracies.append(evaluate(model, val))
    assert min(accuracies) > 0.3 and accuracies[-1] > 0.7  # chance is 0.1


@pytest.mark.parametrize("name,kwargs", [("lenet5", {"input_shape": [1, 8, 8], "padding": 2}),
                                         ("convnet", {"input_shape": [1, 8, 8], "widths": [8, 8, 16, 16, 16]})])
def test_widths_survive_save_and_load(name, kwargs, digits, tmp_path):
    torch.manual_seed(0)
    model = create(name, **kwargs)
    slimmable_(model, Slimmable(widths=(0.5, 1.0)))
    model.train()
    for width in (0.5, 1.0):  # give each width's statistics their own values
        set_width(model, width)
        model(digits.train.x[:64])
    model.eval()
    save(model, tmp_path / "m.nsk")
    loaded = load(tmp_path / "m.nsk")
    assert widths_of(loaded) == (0.5, 1.0)
    x = digits.val.x[:16]
    for width in (0.5, 1.0):
        set_width(model, width)
        set_width(loaded, width)
        assert torch.equal(loaded(x), model(x))


def test_slimmable_convnet_is_a_zoo_model_that_saves_without_a_log(tmp_path):
    model = create("slimmable_convnet").eval()
    assert widths_of(model) == WIDTHS
    set_width(model, 0.25)
    x = torch.randn(2, 1, 28, 28)
    expected = model(x)
    save(model, tmp_path / "s.nsk")
    loaded = load(tmp_path / "s.nsk")
    set_width(loaded, 0.25)
    assert torch.equal(loaded(x), expected)


@pytest.mark.parametrize("widths,message", [
    ((0.5, 1.5), r"width must be a fraction of the full width in \(0, 1\]"),
    ((0.0, 1.0), r"in \(0, 1\]"),
    ((0.25, 0.5), "must include 1.0"),
    ((0.5, 0.5, 1.0), "a width twice"),
])
def test_bad_widths_are_one_line_errors(widths, message):
    with pytest.raises(ConfigError, match=message):
        Slimmable(widths=widths)


def test_width_errors_name_what_to_do():
    model = create("slimmable_convnet", input_shape=[1, 8, 8])
    with pytest.raises(ConfigError, match=r"width 0.3 was not trained.*choose one of \[0.25, 0.5, 0.75, 1.0\]"):
        set_width(model, 0.3)
    with pytest.raises(ConfigError, match="already slimmable"):
        slimmable_(model, Slimmable())
    with pytest.raises(ConfigError, match="is not slimmable"):
        set_width(create("lenet5"), 0.5)
