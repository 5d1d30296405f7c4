"""auto end to end on a user's MLP and digits: the chosen point, the front, recipes that `netshrink
run` reproduces byte for byte, resuming after an interruption, and the bad-input lines."""

import json
import shutil

import pytest
import torch
from torch import nn

from netshrink.autocompress import Budget
from netshrink.autocompress import loop as loop_module
from netshrink.autocompress import points as points_module
from netshrink.autocompress.result import violations
from netshrink.autocompress.table_store import TimeLimitError
from netshrink.core.errors import ConfigError
from netshrink.pipeline import load_recipe, run_recipe
from tests.auto.conftest import SCHEDULE
from tests.auto.conftest import search as _search
from tests.models import UserMLP


def test_the_chosen_point_is_the_best_meeting_the_budget_or_the_closest(searched):
    _, result = searched
    assert len(result.points) >= 2 and result.chosen in result.points
    meeting = [p for p in result.points if not violations(p, result.budget, result.limit)]
    if meeting:
        assert result.met and not result.failed
        assert result.chosen["val_accuracy"] == max(p["val_accuracy"] for p in meeting)
    else:
        assert not result.met and result.failed == violations(result.chosen, result.budget, result.limit)
        assert all(line.startswith(("max_bytes", "max_drop")) and "over by" in line for line in result.failed)


def test_the_front_holds_exactly_the_points_no_other_beats(searched):
    _, result = searched
    indices = {p["index"] for p in result.front}
    for p in result.points:
        beaten = any(q["cost"] <= p["cost"] and q["val_accuracy"] >= p["val_accuracy"] and q is not p
                     and (q["cost"] < p["cost"] or q["val_accuracy"] > p["val_accuracy"]) for q in result.points)
        assert (p["index"] in indices) != beaten
    assert [p["cost"] for p in result.front] == sorted(p["cost"] for p in result.front)


def test_every_point_is_a_recipe_with_its_measured_file(searched):
    out, result = searched
    for point in result.points:
        assert point["cost"] == point["file_bytes"] == open(point["model_file"], "rb").seek(0, 2)
        assert load_recipe(point["recipe_file"]).name == f"auto-point-{point['index']:03d}"
        report = json.loads((out / "points" / f"{point['index']:03d}" / "report.json").read_text())
        assert report["final"]["test_accuracy"] is None  # the search never reads the test split
    assert (out / "model.nsk").read_bytes() == open(result.chosen["model_file"], "rb").read()
    assert (out / "recipe.toml").read_bytes() == open(result.chosen["recipe_file"], "rb").read()
    stored = json.loads((out / "result.json").read_text())
    assert stored["chosen"] == result.chosen["index"] and stored["met"] == result.met
    assert "data:image/png;base64," in (out / "report.html").read_text()


def test_netshrink_run_reproduces_a_trained_point_byte_for_byte(searched, tmp_path):
    _, result = searched
    trained = next(p for p in result.points if p["spec"]["recovery"] > 0)
    report = run_recipe(load_recipe(trained["recipe_file"]), tmp_path, progress=False, log=lambda line: None)
    assert (tmp_path / "model.nsk").read_bytes() == open(trained["model_file"], "rb").read()
    assert report["stages"][-1]["val_accuracy"] == trained["val_accuracy"]


def test_a_rerun_reuses_every_layer_and_point(searched, trained_mlp, monkeypatch):
    out, result = searched

    def refuse(*args, **kwargs):
        raise AssertionError("measured again")

    monkeypatch.setattr(points_module, "run_point", refuse)
    monkeypatch.setattr("netshrink.autocompress.table_store.measure_layer", refuse)
    lines = []
    again = _search(trained_mlp, out, lines=lines)
    assert [p["index"] for p in again.points] == [p["index"] for p in result.points]
    assert again.chosen["index"] == result.chosen["index"]
    assert "table: measured before (reused)" in lines


def _with_table_of(searched, out):
    """``out`` holding the per-layer table ``searched`` measured (the same model, data and space:
    the same key), so a test of the points does not measure it again."""
    shutil.copytree(searched[0] / "search" / "table", out / "search" / "table")


def test_an_interrupted_search_resumes_where_it_stopped(searched, trained_mlp, tmp_path, monkeypatch):
    _with_table_of(searched, tmp_path)
    run_point = points_module.run_point
    calls = []

    def interrupted(*args):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as a kill during the second point
        return run_point(*args)

    monkeypatch.setattr(points_module, "run_point", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _search(trained_mlp, tmp_path, schedule=SCHEDULE[:2])
    assert (tmp_path / "points" / "000.json").exists() and not (tmp_path / "points" / "001.json").exists()
    monkeypatch.setattr(points_module, "run_point", run_point)
    lines = []
    result = _search(trained_mlp, tmp_path, schedule=SCHEDULE[:2], lines=lines)
    assert [p["index"] for p in result.points] == [0, 1]
    assert any(line.startswith("point 0 (reused)") for line in lines)
    assert "table: measured before (reused)" in lines


def test_a_time_limit_too_short_for_a_trained_point_gives_the_one_shot_point(searched, trained_mlp, tmp_path,
                                                                            monkeypatch):
    _with_table_of(searched, tmp_path)
    monkeypatch.setattr(loop_module.PointLoop, "estimate", lambda self, spec: 1e9 if spec.recovery else 0.0)
    result = _search(trained_mlp, tmp_path)
    assert result.partial is not None and "too short for one point with recovery training" in result.partial
    assert [p["spec"]["recovery"] for p in result.points] == [0] and result.chosen is result.points[0]
    assert (tmp_path / "model.nsk").exists()


class NoLayers(nn.Module):
    """Logits from a learned scale of the first pixels: nothing any family applies to."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :10] * self.scale


def test_bad_input_is_one_line_and_leaves_no_folder(trained_mlp, tmp_path):
    cases = [
        (trained_mlp, Budget(max_bytes=100), ConfigError, "max_bytes of 100 bytes is impossible"),
        (trained_mlp, Budget(max_bytes="6x", time_limit=0.001), TimeLimitError, "time_limit 0.001 s is too short"),
        (NoLayers(), Budget(max_bytes="2x"), ConfigError, "NoLayers has no Linear or Conv layer"),
        (NoLayers(), Budget(max_macs="2x"), ConfigError, "no layer whose output channels can be removed"),
    ]
    for i, (model, budget, error, message) in enumerate(cases):
        with pytest.raises(error, match=message) as raised:
            _search(model, tmp_path / str(i), budget=budget)
        assert "\n" not in str(raised.value)
        assert not (tmp_path / str(i)).exists()


def test_a_folder_of_another_search_and_an_unimportable_class_are_refused(searched, tmp_path):
    out, _ = searched

    class Local(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            return self.fc(x.flatten(1))

    with pytest.raises(ConfigError, match="holds the search of another model"):
        _search(UserMLP(), out)  # the same class, other weights
    with pytest.raises(ConfigError, match="give builder='package.module:function'"):
        _search(Local(), tmp_path)


def test_a_later_point_starts_only_with_a_margin_over_its_estimate():
    estimate = 100.0
    assert loop_module.starts_in_time(loop_module.ESTIMATE_MARGIN * estimate, estimate)
    assert not loop_module.starts_in_time(estimate * 1.1, estimate)  # it would fit exactly, on a steady machine
    assert loop_module.starts_in_time(0.0, 0.0)  # a point known to take no time


@pytest.mark.parametrize(("kind", "epochs"), [("bytes", 4 + 2), ("latency_ms", 4), ("macs", 4)])
def test_the_first_trained_points_estimate_counts_the_epochs_its_budget_trains(kind, epochs):
    """Only a size budget clusters, so only its points spend the centroid epochs."""
    from types import SimpleNamespace

    from netshrink.autocompress import PointSpec, Recovery

    loop = loop_module.PointLoop.__new__(loop_module.PointLoop)
    loop.ctx, loop.records, loop.epoch_seconds = SimpleNamespace(kind=kind), [], 10.0
    loop.recovery = Recovery(epochs=4, cluster_epochs=2)
    assert loop.estimate(PointSpec(1.0, "kl", 2)) == epochs * 2 * 10.0


def test_a_point_too_long_for_the_time_left_is_skipped_and_a_shorter_later_one_still_runs(monkeypatch):
    from types import SimpleNamespace

    from netshrink.autocompress import PointSpec, Recovery

    loop = loop_module.PointLoop.__new__(loop_module.PointLoop)
    loop.schedule = (PointSpec(1.0, "kl", 0), PointSpec(1.0, "kl", 8), PointSpec(0.8, "kl", 1))
    loop.out, loop.table_key, loop.limit, loop.recovery = None, "key", 1.0, Recovery()
    loop.records, loop.seen, loop.clock = [], set(), SimpleNamespace(left=lambda: 100.0)
    monkeypatch.setattr(points_module, "finished", lambda out, index, key: None)
    monkeypatch.setattr(loop, "estimate", lambda spec: 50.0 * spec.recovery)  # x8: 400 s, x1: 50 s
    monkeypatch.setattr(loop, "_prepare", lambda index, spec, key: {"index": index, "recipe_file": "", "folder": "",
                                                                  "spec": {"recovery": spec.recovery}})
    monkeypatch.setattr(points_module, "run_point", lambda recipe, folder: {})
    monkeypatch.setattr(loop, "_done", lambda record, measured: loop.records.append(record))
    stopped = loop.run(1, None)
    assert [r["index"] for r in loop.records] == [0, 2]
    assert stopped.startswith("time limit reached (1 scheduled point(s)")
