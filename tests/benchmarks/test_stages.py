"""The resumable stage cache the long benchmarks share (benchmarks/stages.py)."""

from __future__ import annotations

import json

import pytest

from benchmarks.stages import Stages


def test_a_finished_stage_is_read_back_with_the_seconds_it_took(tmp_path):
    calls = []
    first = Stages(tmp_path)
    result = first.stage("a", lambda: calls.append(1) or {"value": 3})
    assert result["value"] == 3 and result["seconds"] >= 0 and "loadavg_at_start" in result
    kept = json.loads((tmp_path / "a.json").read_text())
    kept["seconds"] = 120.0  # as if it had taken two minutes in an earlier invocation
    (tmp_path / "a.json").write_text(json.dumps(kept))

    again = Stages(tmp_path)
    assert again.stage("a", lambda: calls.append(2) or {"value": 4})["value"] == 3
    assert calls == [1]
    assert again.minutes() == pytest.approx(2.0)


def test_fresh_recomputes_and_cached_only_runs_nothing(tmp_path):
    Stages(tmp_path).stage("a", lambda: {"value": 1})
    assert Stages(tmp_path, fresh=True).stage("a", lambda: {"value": 2})["value"] == 2

    only = Stages(tmp_path, cached_only=True)
    assert only.stage("b", lambda: pytest.fail("cached_only must not run a stage")) is None
    assert only.missing == ["b"] and only.seconds == {}
    assert only.stage("a", lambda: {"value": 3})["value"] == 2
    assert set(only.seconds) == {"a"}


def test_a_failing_stage_leaves_nothing_behind(tmp_path):
    def broken() -> dict:
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        Stages(tmp_path).stage("a", broken)
    assert not (tmp_path / "a.json").exists()
    assert Stages(tmp_path).finished("a") is None
