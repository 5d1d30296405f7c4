"""Exit costs, threshold calibration, the profile table and budgets, and the CLI."""

import json

import pytest
import torch
from torch import nn

from netshrink.cli import main
from netshrink.codec.container import load, save
from netshrink.core.errors import ConfigError
from netshrink.dynamic import (
    EarlyExit,
    Profile,
    Slimmable,
    calibrate_thresholds,
    choose_point,
    early_exit_,
    exit_costs,
    profile_,
    profile_table,
    set_thresholds,
    set_width,
    slimmable_,
    threshold_curve,
)
from netshrink.measure import count_macs, evaluate
from netshrink.models import create
from netshrink.train import save_model
from tests.models import INPUT_SHAPE


@pytest.fixture
def exit_model():
    """The tiny zoo convnet with an exit after its first pool and sharp, varied exit confidences."""
    torch.manual_seed(0)
    model = create("convnet", input_shape=list(INPUT_SHAPE), widths=[8, 8, 16, 16, 16], hidden=32).eval()
    early_exit_(model, EarlyExit(after=("features.2",), pool=2))
    with torch.no_grad():
        for module in model.exit_heads.modules():
            if isinstance(module, nn.Linear):
                module.weight.mul_(30)
    return model


def test_exit_costs_add_stages_and_heads(exit_model):
    plain = create("convnet", input_shape=list(INPUT_SHAPE), widths=[8, 8, 16, 16, 16], hidden=32)
    head = count_macs(exit_model.exit_heads[0], (8, 4, 4))
    first, last = exit_costs(exit_model)
    assert last == count_macs(plain, INPUT_SHAPE) + head
    assert head < first < last


def test_curve_ends_are_all_first_and_all_last_and_calibration_matches_real_inference(exit_model, digits):
    curve = threshold_curve(exit_model, digits.val, thresholds=[0.0, 1.0])
    costs = exit_costs(exit_model)
    assert curve[0]["exit_shares"] == [1.0, 0.0] and curve[0]["macs"] == costs[0]
    assert curve[1]["exit_shares"] == [0.0, 1.0] and curve[1]["macs"] == costs[1]
    full = curve[1]["accuracy"]
    assert full == pytest.approx(evaluate(exit_model, digits.val))
    chosen = calibrate_thresholds(exit_model, digits.val, max_drop=0.05)
    assert chosen["accuracy"] >= full - 0.05
    assert 0.0 < chosen["exit_shares"][0] < 1.0  # some but not all samples leave early
    assert exit_model.exit_thresholds.tolist() == [pytest.approx(chosen["threshold"])]
    assert evaluate(exit_model, digits.val) == pytest.approx(chosen["accuracy"])  # dropping samples changes nothing


def test_calibration_against_a_reference_accuracy(exit_model, digits):
    full = threshold_curve(exit_model, digits.val, thresholds=[1.0])[0]["accuracy"]
    own = calibrate_thresholds(exit_model, digits.val, max_drop=0.05)
    stricter = calibrate_thresholds(exit_model, digits.val, max_drop=0.05, reference_accuracy=full + 0.03)
    assert stricter["accuracy"] >= full + 0.03 - 0.05
    assert stricter["macs"] >= own["macs"]  # a higher reference can only cost more
    looser = calibrate_thresholds(exit_model, digits.val, max_drop=0.05, reference_accuracy=full - 0.2)
    assert looser["macs"] <= own["macs"]
    with pytest.raises(ConfigError, match="no threshold is within 0.0 of accuracy 1.1000"):
        calibrate_thresholds(exit_model, digits.val, max_drop=0.0, reference_accuracy=1.1)


def test_calibration_for_a_macs_target_and_one_nothing_fits(exit_model, digits):
    costs = exit_costs(exit_model)
    target = (costs[0] + costs[1]) / 2
    chosen = calibrate_thresholds(exit_model, digits.val, target_macs=target)
    assert chosen["macs"] <= target
    better = [p for p in threshold_curve(exit_model, digits.val) if p["macs"] <= target]
    assert chosen["accuracy"] == max(p["accuracy"] for p in better)
    with pytest.raises(ConfigError, match=f"the cheapest is threshold 0.0000 at {costs[0]:,} MACs"):
        calibrate_thresholds(exit_model, digits.val, target_macs=costs[0] - 1)
    with pytest.raises(ConfigError, match="exactly one target"):
        calibrate_thresholds(exit_model, digits.val)


def test_profile_travels_in_the_file_and_budgets_pick_the_best_point_that_fits(exit_model, digits, tmp_path):
    set_thresholds(exit_model, 0.7)
    profile_(exit_model, Profile(val=digits.val, thresholds=[0.5, 0.9], latency_samples=16))
    points = profile_table(exit_model)["points"]
    assert exit_model.exit_thresholds.tolist() == [pytest.approx(0.7)] and int(exit_model.exit_fixed) == -1
    assert [(p["kind"], p["value"]) for p in points] == [("exit", 0), ("exit", 1), ("threshold", 0.5),
                                                          ("threshold", 0.9)]
    first, last = exit_costs(exit_model)
    plain = create("convnet", input_shape=list(INPUT_SHAPE), widths=[8, 8, 16, 16, 16], hidden=32)
    assert points[0]["macs"] == first and points[1]["macs"] == count_macs(plain, INPUT_SHAPE)  # no heads run
    assert first <= points[2]["macs"] <= points[3]["macs"] <= last
    save(exit_model, tmp_path / "m.nsk")
    loaded = load(tmp_path / "m.nsk")
    assert profile_table(loaded)["points"] == points
    budget = points[3]["macs"]
    chosen = choose_point(loaded, budget_macs=budget)
    fitting = [p for p in points if p["macs"] <= budget]
    assert chosen["accuracy"] == max(p["accuracy"] for p in fitting)
    cheapest = min(p["latency_ms"] for p in points)
    with pytest.raises(ConfigError, match="no operating point fits 1 MACs per sample; the cheapest is exit 0") as info:
        choose_point(loaded, budget_macs=1)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="ms per sample; the cheapest is"):
        choose_point(loaded, budget_ms=cheapest / 2)


def test_slimmable_profile_has_one_point_per_width(digits):
    model = create("lenet300_100", in_features=64)
    slimmable_(model, Slimmable(widths=(0.5, 1.0)))
    points = profile_table(profile_(model, Profile(val=digits.val, latency_samples=8)))["points"]
    assert [p["value"] for p in points] == [0.5, 1.0]
    set_width(model, 0.5)
    assert points[0]["macs"] == count_macs(model, (64,)) < points[1]["macs"]
    assert choose_point(model, budget_macs=points[0]["macs"])["value"] == 0.5


def test_a_model_without_a_profile_says_how_to_make_one():
    with pytest.raises(ConfigError, match="profile_"):
        choose_point(create("lenet5"), budget_macs=1e9)


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "convnet.safetensors"
    save_model(path, create("convnet", input_shape=list(INPUT_SHAPE), widths=[8, 8, 16, 16, 16], hidden=32))
    return str(path)


@pytest.mark.parametrize("extra,message", [
    (["--exits", "features.99"], "no block named 'features.99'"),
    (["--widths", "0.5,1.5"], r"in \(0, 1\]"),
    (["--widths", "0.5,x"], "--widths takes numbers"),
    (["--exits", "features.2", "--distill", "2"], r"--distill and --max-drop must be in \[0, 1\]"),
])
def test_dynamic_command_refuses_bad_input_in_one_line_and_writes_nothing(extra, message, checkpoint, tmp_path,
                                                                          capsys):
    out = tmp_path / "out"
    assert main(["dynamic", checkpoint, "--data", "digits", "--epochs", "1", "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert message.replace("\\", "") in err or __import__("re").search(message, err)
    assert not (out / "model.nsk").exists()


def test_eval_refuses_bad_thresholds_and_budgets_in_one_line(exit_model, digits, tmp_path, capsys):
    profile_(exit_model, Profile(val=digits.val, latency_samples=8))
    path = str(tmp_path / "m.nsk")
    save(exit_model, path)
    assert main(["eval", path, "--data", "digits", "--threshold", "1.5"]) == 2
    assert "--threshold must be in [0, 1]" in capsys.readouterr().err
    assert main(["eval", path, "--data", "digits", "--budget-macs", "10"]) == 2
    err = capsys.readouterr().err
    assert "no operating point fits 10 MACs per sample; the cheapest is exit 0" in err and len(err.splitlines()) == 1


@pytest.mark.slow
@pytest.mark.parametrize("option", [["--exits", "features.2", "--pool", "2"], ["--widths", "0.5,1"]])
def test_dynamic_then_eval_with_a_budget(option, checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["dynamic", checkpoint, "--data", "digits", "--epochs", "2", "--out", str(out), *option]) == 0
    printed = capsys.readouterr().out
    assert "operating points (validation split):" in printed and (out / "model.nsk").is_file()
    points = profile_table(load(out / "model.nsk"))["points"]
    budget = sorted(p["macs"] for p in points)[1]
    assert main(["eval", str(out / "model.nsk"), "--data", "digits", "--budget-macs", str(budget), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    chosen = report["operating_point"]
    assert chosen["macs"] <= budget and 0.0 <= chosen["test_accuracy"] <= 1.0 and chosen["test_latency_ms"] > 0


def test_a_damaged_profile_table_is_one_line_not_a_python_error(exit_model, digits):
    from netshrink.core import set_section

    profile_(exit_model, Profile(val=digits.val, latency_samples=8))
    table = profile_table(exit_model)
    for damaged in ({**table, "points": None}, {**table, "points": [{"kind": "exit", "value": "x"}]},
                    {**table, "points": [{**table["points"][0], "kind": "teleport"}]}):
        set_section(exit_model, "dynamic_profile", damaged)
        with pytest.raises(ConfigError, match="profile table is malformed") as refused:
            choose_point(exit_model, budget_macs=1e12)
        assert "\n" not in str(refused.value)
