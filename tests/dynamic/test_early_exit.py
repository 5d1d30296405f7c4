"""Early exits: heads on every tiny model, the three inference modes, samples really dropped,
joint training through fit, save/load, and one-line refusals."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from netshrink.codec.container import load, save
from netshrink.core.errors import ConfigError
from netshrink.dynamic import (
    EarlyExit,
    all_exit_logits,
    early_exit_,
    exit_loss,
    num_exits,
    set_exit,
    set_thresholds,
)
from netshrink.dynamic.early_exit import confidence
from netshrink.measure import evaluate
from netshrink.models import create
from netshrink.train import FitConfig, fit
from tests.dynamic.conftest import EXIT_BLOCKS
from tests.models import INPUT_SHAPE, TINY_MODELS


def _with_exit(name, model):
    return early_exit_(model, EarlyExit(after=(EXIT_BLOCKS[name],), input_shape=INPUT_SHAPE))


def test_default_forward_is_the_original_network(named_model, digits):
    name, model = named_model
    x = digits.val.x[:16]
    before = model(x)
    _with_exit(name, model)
    assert num_exits(model) == 2
    assert torch.equal(model(x), before)  # thresholds start at 1: nobody leaves early
    early, last = all_exit_logits(model, x)
    assert early.shape == last.shape == (16, 10)
    assert torch.allclose(last, before, atol=1e-6)
    set_exit(model, 0)
    assert torch.equal(model(x), early)
    set_exit(model, 1)
    assert torch.equal(model(x), before)


def test_each_sample_gets_the_logits_of_the_first_exit_it_passes(named_model, digits):
    name, model = named_model
    _with_exit(name, model)
    with torch.no_grad():
        for head in model.exit_heads.modules():  # spread the early exit's confidences
            if isinstance(head, nn.Linear):
                head.weight.mul_(20)
    x = digits.val.x[:40]
    early, last = all_exit_logits(model, x)
    scores = confidence(early, "max_softmax").detach()
    ranked = scores.sort().values
    threshold = float(ranked[19:21].mean())  # between two samples: no score sits on the threshold
    leaves = scores > threshold
    assert 0 < int(leaves.sum()) < 40
    set_thresholds(model, threshold)
    out = model(x)
    assert torch.allclose(out[leaves], early[leaves], atol=1e-5)
    assert torch.allclose(out[~leaves], last[~leaves], atol=1e-5)
    one_at_a_time = torch.cat([model(x[i:i + 1]) for i in range(len(x))])  # the batch-1 path
    assert torch.allclose(one_at_a_time, out, atol=1e-5)


def test_samples_that_left_are_dropped_before_the_next_stage(digits):
    model = TINY_MODELS["convnet"]().eval()
    early_exit_(model, EarlyExit(after=("features.2",), input_shape=INPUT_SHAPE))
    seen = []
    model.classifier[1].register_forward_hook(lambda module, args, out: seen.append(args[0].shape[0]))
    x = digits.val.x[:32]
    scores = confidence(all_exit_logits(model, x)[0], "max_softmax").detach()
    threshold = float(scores.quantile(0.25))
    seen.clear()
    set_thresholds(model, threshold)
    model(x)
    assert seen == [int((scores <= threshold).sum())]
    seen.clear()
    set_thresholds(model, 0.0)  # every sample leaves at exit 0: the rest never runs
    model(x)
    assert seen == []


def test_entropy_criterion_is_one_for_a_certain_and_zero_for_a_uniform_prediction():
    logits = torch.tensor([[100.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    assert torch.allclose(confidence(logits, "entropy"), torch.tensor([1.0, 0.0]), atol=1e-5)
    assert torch.allclose(confidence(logits, "max_softmax"), torch.tensor([1.0, 1 / 3]), atol=1e-5)


def test_exit_loss_is_the_weighted_sum_with_optional_distillation_from_the_last_exit(digits):
    model = TINY_MODELS["lenet300_100"]()
    _with_exit("lenet300_100", model)
    x, y = digits.train.x[:8], digits.train.y[:8]
    model.train()
    last = model(x)
    early = model.netshrink_exit_logits[0]
    loss = exit_loss(model, weights=(0.3, 1.0))(last, x, y)
    assert torch.allclose(loss, 0.3 * F.cross_entropy(early, y) + F.cross_entropy(last, y))
    last = model(x)
    early = model.netshrink_exit_logits[0]
    loss = exit_loss(model, distill=1.0, temperature=2.0)(last, x, y)
    soft = F.softmax(last.detach() / 2.0, dim=-1)
    expected = F.cross_entropy(last, y) + 4.0 * F.kl_div(F.log_softmax(early / 2.0, dim=-1), soft,
                                                         reduction="batchmean")
    assert torch.allclose(loss, expected)
    with pytest.raises(ConfigError, match="exit_loss needs"):
        exit_loss(model)(last, x, y)  # the exits of that forward were used already


def test_joint_training_through_fit_teaches_every_exit(small):
    torch.manual_seed(0)
    train, val = small
    model = TINY_MODELS["convnet"]()
    early_exit_(model, EarlyExit(after=("features.2",), pool=2, input_shape=INPUT_SHAPE))
    before = [h.detach().clone() for h in model.exit_heads.parameters()]
    fit(model, train, FitConfig(epochs=4, batch_size=32, lr=0.05), loss_fn=exit_loss(model, distill=0.5),
        val=val, progress=False)
    assert all(not torch.equal(b, a) for b, a in zip(before, model.exit_heads.parameters(), strict=True))
    for k in range(num_exits(model)):
        set_exit(model, k)
        assert evaluate(model, val) > 0.4  # chance is 0.1


@pytest.mark.parametrize("name", ["lenet300_100", "lenet5", "convnet"])
def test_exits_and_thresholds_survive_save_and_load(name, digits, tmp_path):
    torch.manual_seed(0)
    model = TINY_MODELS[name]().eval()
    _with_exit(name, model)
    set_thresholds(model, 0.15)
    x = digits.val.x[:32]
    expected = model(x)
    save(model, tmp_path / "m.nsk")
    loaded = load(tmp_path / "m.nsk")
    assert torch.equal(loaded.exit_thresholds, model.exit_thresholds)
    assert torch.equal(loaded(x), expected)
    set_exit(loaded, 0)
    assert torch.equal(loaded(x), all_exit_logits(model, x)[0])


def test_zoo_models_need_no_input_shape():
    model = create("convnet")  # 28x28 Fashion-MNIST by default
    early_exit_(model, EarlyExit(after=("features.2",), pool=4))
    assert model.exit_heads[0][-1].in_features == 32 * 4 * 4
    assert model.eval()(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_a_pooled_conv_head_costs_a_fraction_of_a_conv_head_on_a_large_map_and_round_trips(tmp_path):
    from netshrink.dynamic import exit_costs

    costs = {}
    for head in ("conv", "pooled_conv"):
        torch.manual_seed(0)
        model = early_exit_(create("convnet"), EarlyExit(after=("features.0",), head=head, pool=4)).eval()
        costs[head] = exit_costs(model)[0]
    assert costs["pooled_conv"] < costs["conv"] / 3  # a 28x28 map pooled to 8x8 before the head's conv
    set_thresholds(model, 0.2)
    x = torch.randn(8, 1, 28, 28)
    save(model, tmp_path / "m.nsk")
    assert torch.equal(load(tmp_path / "m.nsk")(x), model(x))


class _Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(64, 8), nn.Linear(8, 10)

    def forward(self, x):
        h = self.a(x.flatten(1))
        return self.b(h) if h.sum() > 0 else -self.b(h)  # data-dependent control flow


@pytest.mark.parametrize("model_name,after,message", [
    ("convnet", ("features.99",), "no block named 'features.99'"),
    ("user_resnet", ("depthwise",), "cannot exit after 'depthwise'"),
    ("lenet300_100", ("relu",), "is called twice"),
    ("convnet", ("features.5", "features.2"), "exits must be listed in forward order"),
])
def test_blocks_that_cannot_take_an_exit_are_refused_in_one_line(model_name, after, message):
    model = TINY_MODELS[model_name]()
    with pytest.raises(ConfigError, match=message) as info:
        early_exit_(model, EarlyExit(after=after, input_shape=INPUT_SHAPE))
    assert "\n" not in str(info.value)
    assert not hasattr(model, "exit_heads")


def test_untraceable_models_and_unknown_input_shapes_are_refused():
    with pytest.raises(ConfigError, match="torch.fx cannot trace _Branchy"):
        early_exit_(_Branchy(), EarlyExit(after=("a",), input_shape=(64,)))
    with pytest.raises(ConfigError, match="give its input_shape"):
        early_exit_(TINY_MODELS["user_mlp"](), EarlyExit(after=("body.2",)))


def test_bad_settings_are_one_line_errors():
    model = TINY_MODELS["lenet5"]()
    _with_exit("lenet5", model)
    for bad in (1.5, -0.1):
        with pytest.raises(ConfigError, match=r"threshold must be in \[0, 1\]"):
            set_thresholds(model, bad)
    with pytest.raises(ConfigError, match=r"exit must be an integer in \[0, 1\]"):
        set_exit(model, 2)
    with pytest.raises(ConfigError, match="already has early exits"):
        _with_exit("lenet5", model)
    with pytest.raises(ConfigError, match="unknown exit head"):
        EarlyExit(after=("conv1",), head="mlp")
    with pytest.raises(ConfigError, match="must name at least one block"):
        EarlyExit(after=())
    with pytest.raises(ConfigError, match="has no early exits"):
        set_exit(TINY_MODELS["lenet5"](), 0)
