"""The distillation benchmark's plan of training runs (benchmarks/distillation.py): parallel
workers train the planned runs up front and the stages then read them back by run folder, so the
plan must hold exactly the runs the stages ask for."""

from __future__ import annotations

import pytest

import benchmarks.distillation as bench_module
from benchmarks.distillation import Bench, planned_runs


class _Recorder(Bench):
    """A Bench whose training runs only record the folder they would train in."""

    def __init__(self, out, **kw) -> None:
        super().__init__(None, out, "cpu", quick=True, evaluate_teachers=False, **kw)
        self.teachers = {seed: {"val_acc": acc, "test_acc": 0.93, "file": f"t{seed}"}
                         for seed, acc in zip((0, 1, 2), (0.90, 0.95, 0.92), strict=True)}
        self.asked: set = set()

    def alone(self, name, seed=0):
        self.asked.add(self.alone_run(name, seed))
        return {"seed": seed, "val_acc": 0.9, "test_acc": 0.9}

    def distilled(self, student, seeds, T, cache=None, omit=(), epochs=None, seed=0, augment=None, own_cache=False):
        self.asked.add(self.distilled_run(student, seeds, T, cache, omit, epochs, seed, augment, own_cache))
        row = {"T": T, "seed": seed, "val_acc": 0.9 + T / 100, "test_acc": 0.91, "samples_per_s": [1.0],
               "sessions": [{"device": "cpu", "seconds": 1.0}], "train_samples": 10}
        if omit:
            row.update(omitted_test_acc_after={"3": 0.9})
        return row


def _folders(bench: Bench, plan) -> set:
    return {bench.run_folder(kind, kw) for kind, kw in plan}


@pytest.mark.parametrize("augment", [False, True])
@pytest.mark.parametrize("epochs", [None, 3])
def test_the_plan_holds_exactly_the_runs_the_stages_ask_for(tmp_path, augment, epochs):
    bench = _Recorder(tmp_path, augment=augment, seeds=3, epochs=epochs)
    before = planned_runs(bench, None)
    T = bench_module.stage_sweep(bench)["chosen_T"]
    bench_module.stage_gap(bench)
    assert bench.asked == _folders(bench, before) and len(before) == len(bench.asked)

    bench.asked.clear()
    after = planned_runs(bench, T)
    bench_module.stage_ensemble(bench, T)
    bench_module.stage_omit(bench, T)
    assert bench.asked == _folders(bench, after)
    assert len(after) == 3  # the best single teacher, the ensemble, the omitted class

    bench.asked.clear()
    bench_module.stage_throughput(bench, T)  # timed in its stage, one run after the other: not planned
    assert len(bench.asked) == 2 and not bench.asked & _folders(bench, after)


def test_seeds_and_augmentation_get_run_folders_of_their_own(tmp_path):
    plain, augmented = _Recorder(tmp_path), _Recorder(tmp_path, augment=True)
    assert plain.distilled_run("lenet5", (0,), 2.0) != plain.distilled_run("lenet5", (0,), 2.0, seed=1)
    assert plain.distilled_run("lenet5", (0,), 2.0) != augmented.distilled_run("lenet5", (0,), 2.0)
    assert plain.alone_run("lenet5", 1) != augmented.alone_run("lenet5", 1)
    # with augmentation the teachers run live (a logit cache cannot hold augmented views)
    assert "_live" in augmented.distilled_run("lenet5", (0,), 2.0).name
    assert "_cache" in plain.distilled_run("lenet5", (0,), 2.0).name
