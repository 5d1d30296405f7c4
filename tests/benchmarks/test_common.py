"""``benchmarks.common``: a pool worker does not outlive the benchmark that started it; a results file
keeps every published run; targets judged on seeds."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks import common

ROOT = Path(__file__).resolve().parents[2]

WORKER = ("from benchmarks.common import exit_with_parent; exit_with_parent(0.05); print('armed', flush=True); "
          "import time; time.sleep(120)")
STARTER = f"""
import os, subprocess, sys
worker = subprocess.Popen([sys.executable, "-c", {WORKER!r}], cwd={str(ROOT)!r},
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
assert worker.stdout.readline().strip() == "armed"
print(worker.pid, flush=True)
os._exit(0)  # dies without waiting, as a killed benchmark does
"""


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_a_worker_ends_when_its_parent_dies():
    starter = subprocess.run([sys.executable, "-c", STARTER], cwd=ROOT, capture_output=True, text=True, check=True)
    pid = int(starter.stdout.split()[0])
    give_up = time.monotonic() + 60  # a hang guard only; the worker polls every 0.05 s
    while _running(pid) and time.monotonic() < give_up:
        time.sleep(0.05)
    still_running = _running(pid)
    if still_running:
        subprocess.run(["kill", str(pid)], check=False)
    assert not still_running


def _isolated(monkeypatch, tmp_path):
    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(common, "BENCHMARKS_MD", tmp_path / "BENCHMARKS.md")


def _run(date: str, accuracy: float) -> dict:
    return {"benchmark": "toy", "date": date, "targets": [common.target("accuracy", accuracy, 0.9, ">=")],
            "measurements": {"accuracy": accuracy}}


def test_history_keeps_every_published_run_and_its_misses(monkeypatch, tmp_path):
    _isolated(monkeypatch, tmp_path)
    common.publish("toy", _run("2026-01-01T00:00:00+00:00", 0.85), lambda doc: "## Toy")
    written = common.write_results("toy", _run("2026-01-02T00:00:00+00:00", 0.95))
    history = written["history"]
    assert [run["date"] for run in history] == ["2026-01-01T00:00:00+00:00", "2026-01-02T00:00:00+00:00"]
    assert [run["targets"][0]["met"] for run in history] == [False, True]  # the miss stays visible
    assert all(run["commit"] for run in history)
    assert written["measurements"] == {"accuracy": 0.95}  # the file holds the latest run
    assert json.loads((tmp_path / "results" / "toy.json").read_text()) == written


def test_republishing_a_run_adds_no_history(monkeypatch, tmp_path):
    _isolated(monkeypatch, tmp_path)
    common.write_results("toy", _run("2025-12-31T00:00:00+00:00", 0.8))
    run = _run("2026-01-01T00:00:00+00:00", 0.85)
    common.write_results("toy", run)
    again = common.write_results("toy", json.loads((tmp_path / "results" / "toy.json").read_text()))
    assert [r["date"] for r in again["history"]] == ["2025-12-31T00:00:00+00:00", "2026-01-01T00:00:00+00:00"]
    more = {**run, "targets": run["targets"] + [common.target("size", 2.0, 1.0, "<=")]}  # a later stage finished
    history = common.write_results("toy", more)["history"]
    assert [len(r["targets"]) for r in history] == [1, 2]
    assert not history[-1]["targets"][-1]["met"]


def test_a_file_from_before_histories_is_its_first_run(monkeypatch, tmp_path):
    _isolated(monkeypatch, tmp_path)
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "toy.json").write_text(json.dumps(_run("2025-12-31T00:00:00+00:00", 0.8)))
    history = common.write_results("toy", _run("2026-01-01T00:00:00+00:00", 0.95))["history"]
    assert [(run["date"], run["targets"][0]["value"]) for run in history] == [
        ("2025-12-31T00:00:00+00:00", 0.8), ("2026-01-01T00:00:00+00:00", 0.95)]


def test_publish_renders_the_section_from_the_file_as_written(monkeypatch, tmp_path):
    _isolated(monkeypatch, tmp_path)
    seen = []

    def markdown(doc):
        seen.append(doc)
        return f"## Toy\n\n{common.targets_markdown(doc['targets'])}\n"

    common.publish("toy", {**_run("2026-01-01T00:00:00+00:00", 0.85), "layers": (1, 2)}, markdown)
    assert seen[0]["layers"] == [1, 2]  # what a reader of the JSON gets, not the tuple passed in
    text = (tmp_path / "BENCHMARKS.md").read_text()
    assert f"<!-- begin:toy -->\n{markdown(seen[0]).strip()}\n<!-- end:toy -->" in text
    assert "**MISSED**" in text


def test_a_seeded_target_is_met_by_its_mean():
    t = common.seeded_target("accuracy", {0: 0.89, 1: 0.92, 2: 0.92}, 0.9, ">=")
    assert t["value"] == pytest.approx(0.91) and t["met"]
    assert t["std"] == pytest.approx(0.0173205, rel=1e-4)
    assert t["seeds"] == [0, 1, 2] and t["values"] == [0.89, 0.92, 0.92]
    assert not common.seeded_target("accuracy", {0: 0.95, 1: 0.84}, 0.9, ">=")["met"]  # one seed over is not enough
    assert common.seeded_target("size", {3: 0.5}, 1.0, "<=")["std"] is None
    with pytest.raises(ValueError):
        common.seeded_target("accuracy", {}, 0.9, ">=")


def test_the_targets_table_shows_a_seeded_mean_with_its_spread():
    table = common.targets_markdown([common.seeded_target("accuracy", {0: 0.89, 1: 0.92, 2: 0.92}, 0.9, ">="),
                                     common.seeded_target("size", {0: 0.5}, 1.0, "<=")])
    assert "| accuracy | 0.91 ± 0.017 (3 seeds) | >= 0.9 | yes |" in table
    assert "| size | 0.5 (1 seed) | <= 1.0 | yes |" in table


def test_one_seed_is_enough_only_clear_of_the_line_by_three_measured_std():
    assert common.clear_by_three_std(0.95, 0.90, 0.01)
    assert common.clear_by_three_std(0.85, 0.90, 0.01)  # a clear miss is decided too
    assert not common.clear_by_three_std(0.92, 0.90, 0.01)
    assert not common.clear_by_three_std(0.99, 0.90, None)  # an unmeasured spread decides nothing
