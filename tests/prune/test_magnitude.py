import math

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from netshrink.core import finalize_, get_log
from netshrink.core.errors import ConfigError
from netshrink.prune import MagnitudePrune, mask_sparsity, prune_
from netshrink.train import FitConfig, fit
from tests.prune.helpers import outputs, pruned_weights, round_trip


def test_layer_scope_prunes_exactly_that_fraction_of_every_layer(tiny_model):
    prune_(tiny_model, MagnitudePrune(sparsity=0.7))
    for name, weight in pruned_weights(tiny_model).items():
        assert int((weight == 0).sum()) == round(0.7 * weight.numel()), name


def test_layer_scope_removes_the_smallest_magnitudes(tiny_model):
    before = pruned_weights(tiny_model)
    prune_(tiny_model, MagnitudePrune(sparsity=0.5))
    for name, weight in pruned_weights(tiny_model).items():
        removed, kept = before[name][weight == 0].abs(), before[name][weight != 0].abs()
        assert removed.max() <= kept.min(), name


def test_global_scope_uses_one_threshold_over_all_layers(tiny_model):
    before = pruned_weights(tiny_model)
    prune_(tiny_model, MagnitudePrune(sparsity=0.8, scope="global"))
    after = pruned_weights(tiny_model)
    total = sum(w.numel() for w in after.values())
    assert sum(int((w == 0).sum()) for w in after.values()) == round(0.8 * total)
    removed = torch.cat([before[n][after[n] == 0].abs() for n in after])
    kept = torch.cat([before[n][after[n] != 0].abs() for n in after])
    assert removed.max() <= kept.min()


def test_ties_are_broken_by_position_so_the_mask_repeats():
    layer = nn.Linear(4, 5)
    with torch.no_grad():
        layer.weight.fill_(0.5)
    model = nn.Sequential(layer)
    prune_(model, MagnitudePrune(sparsity=0.25))
    flat = model[0].weight.detach().flatten()
    assert torch.equal(flat == 0, torch.arange(20) < 5)  # the first 5 of 20 equal weights


def test_pruning_again_keeps_what_was_pruned(tiny_model):
    prune_(tiny_model, MagnitudePrune(sparsity=0.5, scope="global"))
    first = {n: w == 0 for n, w in pruned_weights(tiny_model).items()}
    prune_(tiny_model, MagnitudePrune(sparsity=0.8, scope="global"))
    for name, weight in pruned_weights(tiny_model).items():
        assert (weight[first[name]] == 0).all(), name
    assert max(mask_sparsity(tiny_model).values()) > 0.5


def test_masks_hold_inside_fit_and_the_parameters_are_the_same_objects(tiny_model, digits):
    prune_(tiny_model, MagnitudePrune(sparsity=0.6))
    zeros = {n: w == 0 for n, w in pruned_weights(tiny_model).items()}
    originals = [id(p) for p in tiny_model.parameters()]
    fit(tiny_model, digits, FitConfig(epochs=1, batch_size=32, lr=0.05), progress=False)
    assert [id(p) for p in tiny_model.parameters()] == originals
    after = pruned_weights(tiny_model)
    for name in zeros:
        assert (after[name][zeros[name]] == 0).all(), name
        assert (after[name][~zeros[name]] != 0).any(), name  # the rest trained


def test_masks_hold_in_a_users_own_loop_with_an_optimizer_made_before_pruning(digits):
    from tests.models import TINY_MODELS

    torch.manual_seed(0)
    model = TINY_MODELS["user_mlp"]()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    prune_(model, MagnitudePrune(sparsity=0.9, scope="global"))
    zeros = {n: w == 0 for n, w in pruned_weights(model).items()}
    losses = []
    for step in range(30):
        x, y = digits.train.x[step * 32:(step + 1) * 32], digits.train.y[step * 32:(step + 1) * 32]
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    for name, weight in pruned_weights(model).items():
        assert (weight[zeros[name]] == 0).all(), name
        grad = model.get_submodule(name).parametrizations.weight.original.grad
        assert (grad[zeros[name]] == 0).all(), name
    assert sum(losses[-5:]) < sum(losses[:5])


def test_finalize_bakes_masks_and_the_file_is_smaller_and_loads_equal(named_model, tmp_path):
    name, model = named_model
    dense = round_trip(model, name, tmp_path / "dense.nsk")
    assert torch.equal(outputs(dense), outputs(model))
    prune_(model, MagnitudePrune(sparsity=0.9, scope="global"))
    masked = outputs(model)
    finalize_(model)
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    assert torch.equal(outputs(model), masked)
    loaded = round_trip(model, name, tmp_path / "pruned.nsk")
    assert torch.equal(outputs(loaded), masked)
    assert (tmp_path / "pruned.nsk").stat().st_size < 0.75 * (tmp_path / "dense.nsk").stat().st_size


def test_the_log_records_the_layers_and_not_the_filter_function(tiny_model):
    def convs_only(module, name):
        return isinstance(module, nn.Conv2d)

    if not any(isinstance(m, nn.Conv2d) for m in tiny_model.modules()):
        pytest.skip("no conv layer")
    prune_(tiny_model, MagnitudePrune(sparsity=0.5, filter_fn=convs_only))
    record = get_log(tiny_model)[-1]
    assert record["verb"] == "magnitude_prune" and "filter_fn" not in record["config"]
    assert record["layers"] == [n for n, m in tiny_model.named_modules() if isinstance(m, nn.Conv2d)]
    assert all(math.isclose(k, 0.5, abs_tol=0.05) for k in record["kept"].values())


def test_a_per_layer_plan_prunes_each_layer_to_its_own_sparsity():
    from tests.models import TINY_MODELS

    model = TINY_MODELS["lenet300_100"]()
    prune_(model, MagnitudePrune(sparsity={"fc1": 0.9, "fc3": 0.2}))
    weights = pruned_weights(model)
    assert int((weights["fc1"] == 0).sum()) == round(0.9 * weights["fc1"].numel())
    assert int((weights["fc2"] == 0).sum()) == 0
    assert int((weights["fc3"] == 0).sum()) == round(0.2 * weights["fc3"].numel())


@pytest.mark.parametrize("sparsity", [1.0, -0.1, float("nan"), 1.5, "0.5", True])
def test_sparsity_outside_zero_one_is_a_one_line_error(sparsity):
    with pytest.raises(ConfigError, match=r"sparsity must be a number in \[0, 1\)") as error:
        MagnitudePrune(sparsity=sparsity)
    assert "\n" not in str(error.value)


def test_bad_scope_and_unknown_layer_names_are_one_line_errors(tiny_model):
    with pytest.raises(ConfigError, match="unknown scope"):
        MagnitudePrune(sparsity=0.5, scope="model")
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    with pytest.raises(ConfigError, match="unknown layer name\\(s\\) \\['nope'\\]") as error:
        prune_(tiny_model, MagnitudePrune(sparsity=0.5, layers=("nope",)))
    assert "\n" not in str(error.value)
    assert all(torch.equal(before[k], v) for k, v in tiny_model.state_dict().items())  # untouched
    assert get_log(tiny_model) == [] or get_log(tiny_model)[-1]["verb"] != "magnitude_prune"


def test_nothing_to_prune_is_a_one_line_error():
    with pytest.raises(ConfigError, match="nothing to prune in Sequential"):
        prune_(nn.Sequential(nn.ReLU(), nn.Tanh()), MagnitudePrune(sparsity=0.5))
    with pytest.raises(ConfigError, match="nothing to prune"):
        prune_(nn.Sequential(nn.Linear(3, 3)), MagnitudePrune(sparsity=0.5, filter_fn=lambda m, n: False))


def test_prune_refuses_other_configs():
    from netshrink.core import Finalize

    with pytest.raises(ConfigError, match="prune_ takes a pruning config"):
        prune_(nn.Linear(2, 2), Finalize())
