"""The benchmark protocol (benchmarks/study.py): the one resume store, and a Study that fixes its grid
and budget and hands out the test split only after choosing on validation."""

from __future__ import annotations

import json

import pytest

from benchmarks import study as study_module
from benchmarks.study import Goal, ProtocolError, Store, Study, grid_points


def test_a_finished_stage_is_read_back_with_the_seconds_it_took(tmp_path):
    calls = []
    first = Store(tmp_path)
    result = first.stage("a", lambda: calls.append(1) or {"value": 3})
    assert result["value"] == 3 and result["seconds"] >= 0 and "loadavg_at_start" in result
    kept = json.loads((tmp_path / "a.json").read_text())
    kept["seconds"] = 120.0  # as if it had taken two minutes in an earlier invocation
    (tmp_path / "a.json").write_text(json.dumps(kept))

    again = Store(tmp_path)
    assert again.stage("a", lambda: calls.append(2) or {"value": 4})["value"] == 3
    assert calls == [1]
    assert again.minutes() == pytest.approx(2.0)


def test_fresh_recomputes_and_cached_only_runs_nothing(tmp_path):
    Store(tmp_path).stage("a", lambda: {"value": 1})
    assert Store(tmp_path, fresh=True).stage("a", lambda: {"value": 2})["value"] == 2

    only = Store(tmp_path, cached_only=True)
    assert only.stage("b", lambda: pytest.fail("cached_only must not run a stage")) is None
    assert only.missing == ["b"] and only.seconds == {}
    assert only.stage("a", lambda: {"value": 3})["value"] == 2
    assert set(only.seconds) == {"a"}


def test_a_failing_stage_leaves_nothing_behind(tmp_path):
    def broken() -> dict:
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        Store(tmp_path).stage("a", broken)
    assert not (tmp_path / "a.json").exists()
    assert Store(tmp_path).finished("a") is None


GRID = {"toy": {"lr": (0.1, 0.2), "teacher": ("none", "dense")}}
GOALS = [Goal("accuracy", ">=", 0.5), Goal("size (x)", ">=", 2.0, seeded=False)]


def _data():
    import torch

    from netshrink.data import Dataset, Split

    split = Split(torch.zeros(4, 1, 2, 2), torch.zeros(4, dtype=torch.long))
    return Dataset("toy", split, split, split, 2, ("a", "b"))


def _study(root, **kw):
    return Study("toy", root, _data(), grid=GRID, budget={"epochs": 3}, goals=GOALS, **kw)


def test_the_test_split_is_handed_out_only_after_the_choice_on_validation(tmp_path):
    study = _study(tmp_path)
    assert study.data.test is None  # what candidates train and choose on
    with pytest.raises(ProtocolError, match="only after the choice"):
        study.test("toy")
    results = {f"c{i}": study.run(f"c{i}", lambda v=v, point=point: {"val_acc": v, **point})
               for i, (v, point) in enumerate(zip((0.7, 0.9, 0.8, 0.6), study.candidates("toy"), strict=True))}
    assert study.choose("toy", results) == "c1"
    assert study.test("toy") is not None
    doc = study.doc({}, [study.target("accuracy", {0: 0.6, 1: 0.4, 2: 0.5}), study.target("size (x)", 3.0)])
    assert doc["protocol"]["grid"] == {"toy": {"lr": [0.1, 0.2], "teacher": ["none", "dense"]}}
    assert doc["protocol"]["budget"] == {"epochs": 3} and doc["protocol"]["choices"]["toy"]["chosen"] == "c1"
    accuracy = doc["targets"][0]
    assert accuracy["value"] == pytest.approx(0.5) and accuracy["met"] and accuracy["std"] > 0


def test_a_resumed_study_must_declare_the_same_grid_and_budget(tmp_path):
    _study(tmp_path)
    _study(tmp_path)  # the same protocol resumes
    with pytest.raises(ProtocolError, match="another grid or budget"):
        Study("toy", tmp_path, _data(), grid=GRID, budget={"epochs": 8}, goals=GOALS)
    Study("toy", tmp_path, _data(), grid=GRID, budget={"epochs": 8}, goals=GOALS, fresh=True)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "stage.json").write_text("{}")  # a run kept before protocols were recorded
    with pytest.raises(ProtocolError):
        _study(tmp_path / "old")


def test_an_accuracy_target_needs_every_seed_unless_measured_clear_by_three_std(tmp_path, monkeypatch):
    monkeypatch.setattr(study_module, "RESULTS", tmp_path / "results")
    study = _study(tmp_path / "runs")
    with pytest.raises(ProtocolError, match="judged on seeds"):
        study.target("accuracy", {0: 0.9})
    assert study.seeds_for("accuracy") == (0, 1, 2)
    (tmp_path / "results").mkdir()
    last = {"name": "accuracy", "value": 0.9, "std": 0.01}
    (tmp_path / "results" / "toy.json").write_text(json.dumps({"history": [{"targets": [last]}]}))
    assert study.seeds_for("accuracy") == (0,)
    assert study.target("accuracy", {0: 0.9})["met"]
    last["std"] = 0.2  # 0.9 is not clear of 0.5 by 3 x 0.2
    (tmp_path / "results" / "toy.json").write_text(json.dumps({"history": [{"targets": [last]}]}))
    assert study.seeds_for("accuracy") == (0, 1, 2)


def test_every_declared_goal_is_judged_and_the_grid_is_every_combination(tmp_path):
    study = _study(tmp_path)
    with pytest.raises(ProtocolError, match="not judged"):
        study.doc({}, [study.target("size (x)", 3.0)])
    assert grid_points({"a": (1, 2), "b": ("x",)}) == [{"a": 1, "b": "x"}, {"a": 2, "b": "x"}]


def test_a_resumed_training_run_counts_every_session_by_device(tmp_path):
    from benchmarks.study import SessionClock, seconds_by_device

    first = SessionClock(tmp_path, "cpu")
    first.on_epoch_end(None, None)  # a killed session keeps what it recorded at its last epoch's end
    resumed = SessionClock(tmp_path, "NVIDIA H200").stop()
    assert [s["device"] for s in resumed] == ["cpu", "NVIDIA H200"]
    assert set(seconds_by_device(resumed)) == {"cpu", "NVIDIA H200"}
    assert json.loads((tmp_path / "sessions.json").read_text()) == resumed
