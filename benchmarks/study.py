"""The benchmark protocol (issue 20): a ``Study`` declares, in code and before anything trains, a
benchmark's candidate grid, its training budget and its targets; it chooses among candidates on
validation accuracy alone, and only then hands out the test split.

- **Grid and budget are fixed first.** They are written to ``<root>/protocol.json`` when a study
  starts; a resumed run must declare exactly the same ones (a widened grid or a bigger budget is a
  new study in a new folder, or ``--fresh``), and both are recorded in the results file.
- **Candidates never see the test split.** ``Study.data`` is the dataset without it; ``Study.test``
  is handed out for a choice only after ``Study.choose`` made it on validation.
- **Accuracy targets are judged on 3 seeds** (``SEEDS``): mean and standard deviation, met only
  when the mean meets the goal (:func:`benchmarks.common.seeded_target`). One seed is enough only
  where the last published run measured the target clear of its line by more than 3 standard
  deviations (:meth:`Study.seeds_for`). Ratio and size targets (``Goal(seeded=False)``) need one run.
- **One resume mechanism.** Every run is kept as ``<root>/<key>.json`` with the seconds it took
  (:class:`Store`); a killed benchmark continues where it stopped and its time figure still counts
  every run it reports, made now or in an earlier session.
- **Every published run is kept**: :meth:`Study.doc` is published through
  :func:`benchmarks.common.publish`, which appends the run to the file's ``history``.

Hand-written: Optuna's GridSampler with SQLite storage would give the grid and the resume, but not
the seeds, the fixed-before-test check or the history, which are the point here; a JSON file per
run is all the storage this needs.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.common import RESULTS, clear_by_three_std, results_doc, seeded_target, target
from netshrink.core.files import write_atomically
from netshrink.train.callbacks import Callback

#: the seeds every accuracy target is judged on
SEEDS = (0, 1, 2)


class ProtocolError(RuntimeError):
    """A benchmark broke its own protocol (read the test split before choosing, changed its grid...)."""


class Store:
    """Resumable runs: each run's result kept as ``<root>/<key>.json`` with its seconds.

    Args:
        root: folder of the ``<key>.json`` results (created).
        fresh: recompute every run, ignoring kept results.
        cached_only: run nothing; a run not finished is reported as None and named in ``missing``.
    """

    def __init__(self, root: Path, fresh: bool = False, cached_only: bool = False) -> None:
        self.root, self.fresh, self.cached_only = Path(root), fresh, cached_only
        self.results: dict[str, dict] = {}  # each reported run's result, made now or before
        self.missing: list[str] = []
        self.root.mkdir(parents=True, exist_ok=True)

    @property
    def seconds(self) -> dict[str, float]:
        """Each reported run's seconds, when it ran."""
        return {key: result["seconds"] for key, result in self.results.items()}

    def path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def finished(self, key: str) -> dict | None:
        """The kept result of run ``key`` (reported: counted in ``seconds``), or None."""
        path = self.path(key)
        if not path.exists():
            return None
        self.results[key] = json.loads(path.read_text())
        return self.results[key]

    def stage(self, key: str, work: Callable[[], dict]) -> dict | None:
        """The kept result of run ``key``, or ``work()``'s, kept with ``seconds`` and the load
        average at its start (absolute times on a shared CPU need it beside them)."""
        if not self.fresh and (result := self.finished(key)) is not None:
            print(f"[{key}] cached", flush=True)
            return result
        if self.cached_only:
            print(f"[{key}] not finished, skipped (cached only)", flush=True)
            self.missing.append(key)
            return None
        print(f"[{key}] running", flush=True)
        load, began = os.getloadavg()[0], time.perf_counter()
        result = work()
        result["seconds"] = time.perf_counter() - began
        result["loadavg_at_start"] = load
        write_atomically(self.path(key), (json.dumps(result, indent=2) + "\n").encode())
        print(f"[{key}] {result['seconds']:.0f} s", flush=True)
        self.results[key] = result
        return result

    def minutes(self) -> float:
        """Minutes of every run reported so far, summed."""
        return sum(self.seconds.values()) / 60


class SessionClock(Callback):
    """The seconds of every session of a resumable training run, by device, kept in
    ``<folder>/sessions.json``: each session (this process's ``fit``) adds an entry, updated after every
    epoch, so a killed session still counts up to its last finished epoch and a resumed run's time is
    every session's, not only the last one's. Pass it to ``fit``'s ``callbacks``; ``stop()`` after."""

    def __init__(self, folder: Path, device: str) -> None:
        self.path = Path(folder) / "sessions.json"
        self.sessions = json.loads(self.path.read_text()) if self.path.exists() else []
        self.sessions.append({"device": device, "seconds": 0.0})
        self.began = time.perf_counter()

    def on_epoch_end(self, model, info) -> None:
        self.stop()

    def stop(self) -> list[dict]:
        """Record this session's seconds so far; every session's entries."""
        self.sessions[-1]["seconds"] = time.perf_counter() - self.began
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(self.path, (json.dumps(self.sessions, indent=2) + "\n").encode())
        return self.sessions


def kept_test_accuracy(run: dict, split) -> float:
    """Accuracy on ``split`` of a kept run's model, read back from its .nsk (``run["nsk"]``: a path
    relative to the repository, or absolute)."""
    from benchmarks.common import ROOT
    from netshrink.codec.container import load
    from netshrink.measure import evaluate

    path = Path(run["nsk"])
    return evaluate(load(path if path.is_absolute() else ROOT / path), split)


def seconds_by_device(sessions: list[dict]) -> dict[str, float]:
    """The seconds of ``sessions`` (``SessionClock`` entries) summed per device."""
    totals: dict[str, float] = {}
    for session in sessions:
        totals[session["device"]] = totals.get(session["device"], 0.0) + session["seconds"]
    return totals


@dataclasses.dataclass(frozen=True)
class Goal:
    """One target: ``value op goal``. ``seeded``: an accuracy target, judged on the mean of seeds;
    otherwise a ratio, size or time, judged on one run."""

    name: str
    op: str
    goal: float
    seeded: bool = True


def grid_points(axes: dict[str, tuple]) -> list[dict]:
    """Every combination of the axes' values, the first axis varying slowest."""
    return [dict(zip(axes, values, strict=True)) for values in itertools.product(*axes.values())]


def _plain(value):
    """``value`` as JSON reads it back (tuples become lists), for comparing protocols."""
    return json.loads(json.dumps(value, default=str))


class Study:
    """One benchmark's protocol; see the module docstring.

    Args:
        name: the benchmark (its results file is ``benchmarks/results/<name>.json``).
        root: folder of its kept runs and ``protocol.json``.
        data: the whole dataset; candidates get it without its test split (``data``).
        grid: each choice's candidates, as ``{label: {axis: values}}``.
        budget: everything else fixed before the run (epochs, batch size, threads, device...).
        goals: the targets, by name.
        seeds: the seeds of the seeded targets (``SEEDS``).
        fresh, cached_only: as in :class:`Store`.
    """

    def __init__(self, name: str, root: Path, data, *, grid: dict[str, dict[str, tuple]], budget: dict,
                 goals: list[Goal], seeds: tuple[int, ...] = SEEDS, fresh: bool = False,
                 cached_only: bool = False) -> None:
        self.name, self.seeds, self._data = name, tuple(seeds), data
        self.goals = {goal.name: goal for goal in goals}
        self.store = Store(root, fresh, cached_only)
        self.protocol = _plain({"grid": grid, "budget": budget, "seeds": self.seeds,
                                "choice": "the best validation accuracy of seed 0"})
        fixed = self.store.root / "protocol.json"
        before = [*self.store.root.glob("*.json"), *self.store.root.glob("*.nsk")]  # runs kept before protocols
        made = json.loads(fixed.read_text()) if fixed.exists() else ("unknown" if before else self.protocol)
        if made != self.protocol and not fresh:
            raise ProtocolError(f"{self.store.root} holds runs of another grid or budget; give --fresh or another "
                                "folder (runs of two protocols are never mixed)")
        write_atomically(fixed, (json.dumps(self.protocol, indent=2) + "\n").encode())
        self.choices: dict[str, dict] = {}

    @property
    def data(self):
        """The dataset the candidates train and choose on: its test split is left out."""
        return dataclasses.replace(self._data, test=None)

    def candidates(self, label: str) -> list[dict]:
        """The declared candidates of choice ``label``."""
        return grid_points(self.protocol["grid"][label])

    def run(self, key: str, work: Callable[[], dict]) -> dict | None:
        """Run ``work`` as ``key``, or read its kept result back (:meth:`Store.stage`)."""
        return self.store.stage(key, work)

    def choose(self, label: str, results: dict[str, dict], score: str = "val_acc") -> str:
        """The key of the best of ``results`` (kept runs by key) on validation ``score``; recorded
        with every candidate's score. Afterwards ``test(label)`` may be read."""
        if not results:
            raise ProtocolError(f"{label}: no candidate finished")
        best = max(results, key=lambda key: results[key][score])
        self.choices[label] = {"chosen": best, "validation": {key: r[score] for key, r in results.items()}}
        return best

    def record_choice(self, label: str, chosen, validation=None) -> None:
        """Record a choice made on validation by other means (a calibrated threshold, a point of a
        profile measured on validation), or ``chosen`` "none" where the grid leaves nothing to choose;
        afterwards ``test(label)`` may be read."""
        self.choices[label] = {"chosen": chosen, "validation": validation}

    def test(self, label: str):
        """The test split, for choice ``label`` once it is made on validation."""
        if label not in self.choices:
            raise ProtocolError(f"{label}: the test split is read only after the choice on validation")
        return self._data.test

    def seeds_for(self, *names: str) -> tuple[int, ...]:
        """The seeds to run for the seeded goals ``names``: all of them, or seed 0 alone when the
        last published run measured each of them clear of its line by more than 3 std."""
        path = RESULTS / f"{self.name}.json"
        history = json.loads(path.read_text()).get("history", []) if path.exists() else []
        last = {t["name"]: t for t in history[-1]["targets"]} if history else {}
        clear = all(name in last and clear_by_three_std(last[name]["value"], self.goals[name].goal,
                                                          last[name].get("std")) for name in names)
        return self.seeds[:1] if clear else self.seeds

    def target(self, name: str, value: float | dict[int, float]) -> dict:
        """Goal ``name`` judged on ``value``: one figure, or a seeded goal's figure per seed."""
        goal = self.goals[name]
        if not goal.seeded:
            return target(name, float(value), goal.goal, goal.op)
        if set(value) != set(self.seeds) and tuple(value) != self.seeds_for(name):
            raise ProtocolError(f"{name}: judged on seeds {sorted(value)}, not {list(self.seeds)}")
        return seeded_target(name, value, goal.goal, goal.op)

    def minutes(self) -> float:
        """Minutes of every run reported, made now or by an earlier session."""
        return self.store.minutes()

    def doc(self, measurements: dict, targets: list[dict], complete: bool = True, **extra) -> dict:
        """The results file's content: ``measurements``, ``targets`` and the protocol they were
        measured under (grid, budget, seeds, every candidate's validation score and the choices).
        ``complete``: every declared goal must be judged (False: a run reporting what finished)."""
        missing = set(self.goals) - {t["name"] for t in targets}
        if missing and complete:
            raise ProtocolError(f"goals declared but not judged: {sorted(missing)}")
        return results_doc(self.name, measurements, targets, protocol={**self.protocol, "choices": self.choices},
                           **extra)
