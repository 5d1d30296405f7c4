"""Running recipes on digits: stage files, rates, resume, the HTML report, and a five-family chain."""

import json

import pytest
import torch

from netshrink.cli import main
from netshrink.codec.container import load
from netshrink.codec.inspect import inspect_report
from netshrink.measure.size import dense_fp32_bytes
from netshrink.models import create
from netshrink.pipeline import RecipeError, check_recipe, parse_recipe, run_recipe
from netshrink.report.plots import weight_rows

FIT = {"lr": 0.05, "deterministic": True, "batch_size": 256}
PRUNE_CLUSTER = {
    "name": "tiny-deep-compression",
    "model": {"zoo": "lenet300_100"},
    "data": {"name": "digits"},
    "stages": [
        {"verb": "train", "epochs": 2, "fit": FIT},
        {"verb": "prune", "config": {"sparsity": 0.8}, "epochs": 1, "fit": FIT},
        {"verb": "cluster", "config": {"bits": 4}, "epochs": 1,
         "fit": {"optimizer": "adam", "lr": 0.001, "deterministic": True, "batch_size": 256}},
    ],
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    lines = []
    report = run_recipe(parse_recipe(PRUNE_CLUSTER), out, progress=False, log=lines.append)
    return out, report, lines


def test_each_stage_is_saved_and_measured(finished):
    out, report, _ = finished
    verbs = [row["verb"] for row in report["stages"]]
    assert verbs == ["baseline", "train", "magnitude_prune", "cluster"]  # "prune" is an alias
    for row in report["stages"]:
        path = out / "stages" / f"{row['stage']:02d}-{row['verb']}.nsk"
        assert path.stat().st_size == row.get("nsk_bytes", row["file_bytes"])
    baseline = report["stages"][0]  # the reference itself: the starting model as dense fp32
    assert baseline["file_bytes"] == dense_fp32_bytes(create("lenet300_100", in_features=64)) == \
        report["final"]["baseline_dense_fp32_bytes"] and baseline["rate"] == 1.0
    rates = [row["rate"] for row in report["stages"]]
    assert rates[2] > 2 * rates[1] and rates[3] > 1.5 * rates[2]  # pruning, then clustering shrink the file
    assert report["final"]["file_bytes"] == report["stages"][-1]["file_bytes"]


def test_one_file_has_one_baseline_in_inspect_eval_the_report_and_the_log(finished, capsys):
    out, report, lines = finished
    path, final = out / "model.nsk", report["final"]
    versus = (f"{final['file_bytes']:,} B vs original dense fp32 {final['baseline_dense_fp32_bytes']:,} B = "
              f"{final['rate']:.1f}x smaller")
    assert versus in inspect_report(path)
    assert main(["eval", str(path), "--data", "digits"]) == 0
    assert versus in capsys.readouterr().out
    assert f"against the original model's {final['baseline_dense_fp32_bytes']:,} dense fp32 bytes" in \
        (out / "report.html").read_text()
    assert lines[0].startswith("[0/3] baseline:")  # the first line says what it measures
    assert lines[1].strip().startswith("val acc") and "(1.0x)" in lines[1]


def test_final_file_is_sparse_and_clustered(finished):
    out, report, _ = finished
    model = load(out / "model.nsk")
    for name in ("fc1", "fc2"):
        weight = getattr(model, name).weight
        assert (weight == 0).float().mean().item() == pytest.approx(0.8, abs=0.01)
        assert len(torch.unique(weight)) <= 16  # 15 centroids + the pruned zero
    assert json.loads((out / "report.json").read_text())["final"]["test_accuracy"] == report["final"]["test_accuracy"]


def test_html_report_is_self_contained(finished):
    out, _, _ = finished
    page = (out / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') >= 2
    assert "http" not in page and "<script" not in page
    assert "cluster" in page and "fc1.weight" in page
    plotted = weight_rows(json.loads((out / "report.json").read_text())["stages"][-1]["layers"])
    assert [r["name"] for r in plotted] == ["fc1.weight", "fc2.weight", "fc3.weight"]  # no biases in the line


def test_resume_redoes_only_unfinished_stages(finished, tmp_path):
    out, report, _ = finished
    resumed = tmp_path / "resumed"
    (resumed / "stages").mkdir(parents=True)
    for path in (out / "stages").glob("0[0-2]-*.*"):  # baseline, train and prune finished; cluster did not
        (resumed / "stages" / path.name).write_bytes(path.read_bytes())
    (resumed / "recipe.json").write_bytes((out / "recipe.json").read_bytes())
    lines = []
    again = run_recipe(parse_recipe(PRUNE_CLUSTER), resumed, progress=False, log=lines.append)
    assert sum("done before" in line for line in lines) == 3
    assert any(line.startswith("[3/3] cluster: Cluster") for line in lines)
    assert again["stages"][-1]["file_bytes"] == report["stages"][-1]["file_bytes"]
    assert again["stages"][-1]["val_accuracy"] == report["stages"][-1]["val_accuracy"]


def test_fixed_recipe_reuses_the_stages_before_the_change(finished, tmp_path):
    """A recipe changed at its last stage and run again into the same folder reuses the baseline,
    train and prune stages and redoes only the changed one (its old checkpoints cleared)."""
    out, report, _ = finished
    again_folder = tmp_path / "again"
    (again_folder / "stages").mkdir(parents=True)
    for path in (out / "stages").glob("*.*"):
        (again_folder / "stages" / path.name).write_bytes(path.read_bytes())
    (again_folder / "stages" / "03-cluster").mkdir()
    (again_folder / "stages" / "03-cluster" / "stage-fingerprint").write_text("an older recipe")
    (again_folder / "stages" / "03-cluster" / "stale.txt").write_text("checkpoint of the older recipe")
    changed = json.loads(json.dumps(PRUNE_CLUSTER))
    changed["stages"][2]["config"]["bits"] = 3
    lines = []
    again = run_recipe(parse_recipe(changed), again_folder, progress=False, log=lines.append)
    assert sum("done before" in line for line in lines) == 3
    assert any(line.startswith("[3/3] cluster: Cluster(bits=3") for line in lines)
    assert not (again_folder / "stages" / "03-cluster" / "stale.txt").exists()
    assert again["stages"][2]["file_bytes"] == report["stages"][2]["file_bytes"]
    assert again["stages"][3]["file_bytes"] < report["stages"][3]["file_bytes"]


def test_unknown_layer_is_refused_before_anything_trains(tmp_path):
    bad = json.loads(json.dumps(PRUNE_CLUSTER))
    bad["stages"][2]["config"]["bits"] = {"fc9": 4}
    with pytest.raises(RecipeError, match=r"stages\[2\]\.config: no layer named 'fc9'"):
        run_recipe(parse_recipe(bad), tmp_path, progress=False, log=lambda line: None)
    assert not list((tmp_path / "stages").glob("01-*"))


def test_layer_made_by_an_earlier_structural_stage_is_known(tmp_path):
    recipe = {"model": {"zoo": "lenet300_100"}, "data": {"name": "digits"}, "stages": [
        {"verb": "low_rank", "config": {"rank": 8, "layers": ["fc1"]}},
        {"verb": "cluster", "config": {"bits": {"fc1.reduce": 4}}}]}
    check_recipe(parse_recipe(recipe))
    recipe["stages"] = recipe["stages"][1:]  # without the factorization there is no fc1.reduce
    with pytest.raises(RecipeError, match="no layer named 'fc1.reduce'"):
        check_recipe(parse_recipe(recipe))


@pytest.mark.slow
def test_five_families_chain(tmp_path):
    """Architecture (low rank, distilled from the baseline), dynamic (an early exit), pruning and
    clustering in one recipe: the exits survive every later stage and are re-profiled."""
    fit = {"lr": 0.02, "batch_size": 256}
    recipe = parse_recipe({
        "model": {"zoo": "lenet5"}, "data": {"name": "digits"},
        "stages": [
            {"verb": "train", "epochs": 2, "fit": fit},
            {"verb": "low_rank", "config": {"energy": 0.9}, "epochs": 1, "teacher": "baseline", "fit": fit},
            {"verb": "early_exit", "config": {"after": ["conv1"], "pool": 2}, "epochs": 1, "fit": fit},
            {"verb": "prune", "config": {"sparsity": 0.7}, "epochs": 1, "fit": fit},
            {"verb": "cluster", "config": {"bits": 4}, "epochs": 1, "fit": {"optimizer": "adam", "lr": 0.001}},
        ]})
    report = run_recipe(recipe, tmp_path, progress=False, log=lambda line: None)
    last = report["stages"][-1]
    assert [p["kind"] for p in last["dynamic_points"]].count("exit") == 2
    assert last["rate"] > report["stages"][2]["rate"] * 3
    model = load(tmp_path / "model.nsk")
    assert hasattr(model, "exit_heads") and any(n.endswith(".reduce") for n, _ in model.named_modules())
    assert "accuracy against MACs" in (tmp_path / "report.html").read_text()


def test_data_changed_in_place_is_not_reused(tmp_path):
    """The stage fingerprint covers the data's contents, not only its name: the same recipe over a
    .npz file rewritten with other labels trains again instead of reusing the old stages."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.random((60, 1, 8, 8), dtype=np.float32)
    y = rng.integers(0, 3, 60)
    path = tmp_path / "data.npz"
    np.savez(path, x_train=x[:40], y_train=y[:40], x_test=x[40:], y_test=y[40:])
    recipe = {"model": {"zoo": "lenet300_100"}, "data": {"name": str(path)},
              "stages": [{"verb": "prune", "config": {"sparsity": 0.5}, "epochs": 1, "fit": FIT}]}
    out = tmp_path / "out"
    run_recipe(parse_recipe(recipe), out, progress=False, log=lambda line: None)
    lines = []
    run_recipe(parse_recipe(recipe), out, progress=False, log=lines.append)
    assert sum("done before" in line for line in lines) == 2
    np.savez(path, x_train=x[:40], y_train=(y[:40] + 1) % 3, x_test=x[40:], y_test=y[40:])
    lines.clear()
    run_recipe(parse_recipe(recipe), out, progress=False, log=lines.append)
    assert not any("done before" in line for line in lines)


def test_later_stages_recalibrate_exits_with_the_early_exit_stages_max_drop():
    """A prune stage after an early-exit stage re-calibrates the exit thresholds with that stage's
    ``max_drop``, not the default; before the exits exist there is nothing to carry."""
    from netshrink.pipeline.run import _dynamic_options

    recipe = parse_recipe({"model": {"zoo": "lenet5"}, "data": {"name": "digits"}, "stages": [
        {"verb": "prune", "config": {"sparsity": 0.5}},
        {"verb": "early_exit", "config": {"after": ["conv1"]}, "max_drop": 0.02},
        {"verb": "prune", "config": {"sparsity": 0.7}}]})
    exits = recipe.stages[1].technique.training
    assert _dynamic_options(recipe, recipe.stages[0], exits) == {}
    assert _dynamic_options(recipe, recipe.stages[1], exits) == {"max_drop": 0.02}
    assert _dynamic_options(recipe, recipe.stages[2], exits) == {"max_drop": 0.02}
