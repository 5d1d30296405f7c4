import pytest
import torch

from netshrink.core.errors import ConfigError
from netshrink.prune import (
    MagnitudePrune,
    format_sensitivity,
    layer_sizes,
    plot_sensitivity,
    prune_,
    sensitivity,
    sensitivity_plan,
)
from netshrink.train import FitConfig, fit


def test_sensitivity_prunes_each_layer_alone_on_a_copy(tiny_model, digits):
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    table = sensitivity(tiny_model, digits.val, sparsities=(0.5, 0.99))
    assert set(table) == {""} | set(layer_sizes(tiny_model))
    assert all(set(row) == {0.5, 0.99} for name, row in table.items() if name)
    assert all(0.0 <= acc <= 1.0 for row in table.values() for acc in row.values())
    assert all(torch.equal(before[k], v) for k, v in tiny_model.state_dict().items())  # model untouched
    assert "unpruned accuracy" in format_sensitivity(table)


def test_a_trained_model_loses_accuracy_as_a_layer_is_pruned_harder(digits):
    from tests.models import TINY_MODELS

    torch.manual_seed(0)
    model = fit(TINY_MODELS["user_mlp"](), digits, FitConfig(epochs=3, batch_size=16), progress=False).model
    table = sensitivity(model, digits.val, sparsities=(0.2, 0.99))
    assert table["body.1"][0.99] < table["body.1"][0.2] <= table[""][0.0] + 0.02
    sizes = layer_sizes(model)
    plan = sensitivity_plan(table, sizes, target=0.6)
    prune_(model, MagnitudePrune(sparsity=plan))
    zeros = sum(int((m.weight == 0).sum()) for n, m in model.named_modules() if n in sizes)
    assert zeros / sum(sizes.values()) == pytest.approx(0.6, abs=0.01)


def test_the_plot_is_a_png(tmp_path):
    table = {"": {0.0: 0.9}, "fc1": {0.5: 0.9, 0.9: 0.8}, "fc2": {0.5: 0.85, 0.9: 0.5}}
    plot_sensitivity(table, tmp_path / "sensitivity.png")
    assert (tmp_path / "sensitivity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_plan_prunes_robust_layers_harder_and_meets_the_target():
    table = {"": {0.0: 0.90},
             "robust": {0.5: 0.90, 0.8: 0.90, 0.95: 0.89},
             "fragile": {0.5: 0.85, 0.8: 0.60, 0.95: 0.20}}
    sizes = {"robust": 900, "fragile": 100}
    plan = sensitivity_plan(table, sizes, target=0.8)
    assert plan["robust"] > plan["fragile"]
    reached = sum(plan[n] * sizes[n] for n in sizes) / sum(sizes.values())
    assert reached == pytest.approx(0.8, abs=1e-3)


def test_an_unreachable_target_is_a_one_line_error():
    table = {"": {0.0: 0.9}, "fc1": {0.5: 0.9}}
    with pytest.raises(ConfigError, match="above what the analysed sparsities reach") as error:
        sensitivity_plan(table, {"fc1": 10}, target=0.9)
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="sizes lacks layers"):
        sensitivity_plan(table, {}, target=0.3)
