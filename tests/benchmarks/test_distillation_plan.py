"""The distillation benchmark's plan of training runs (benchmarks/distillation.py), which parallel
workers train up front and the stages then read back by run folder."""

from __future__ import annotations

from benchmarks.distillation import GAP_TEMPERATURES, STUDENTS, SWEEP_STUDENT, TEMPERATURES, Bench, planned_runs


def _bench(tmp_path, **kw) -> Bench:
    return Bench(data=None, out=tmp_path, device="cpu", quick=True, **kw)


def _folder(bench: Bench, kind: str, kwargs: dict):
    return bench.alone_run(**kwargs) if kind == "alone" else bench.distilled_run(**kwargs)


def test_the_plan_holds_every_gap_and_sweep_run_once(tmp_path):
    bench = _bench(tmp_path, seeds=2)
    plan = planned_runs(bench, None)
    folders = [_folder(bench, kind, kw) for kind, kw in plan]
    assert len(set(folders)) == len(folders)
    # the sweep's seed-0 runs at the gap temperatures are the gap stage's own, planned once
    expected = (len(STUDENTS) * 2 * (1 + len(GAP_TEMPERATURES))
                + len(set(TEMPERATURES) - set(GAP_TEMPERATURES)))
    assert len(plan) == expected
    for name in STUDENTS:
        for seed in (0, 1):
            assert bench.alone_run(name, seed) in folders
            for t in GAP_TEMPERATURES:
                assert bench.distilled_run(name, (0,), t, seed=seed) in folders
    for t in TEMPERATURES:
        assert bench.distilled_run(SWEEP_STUDENT, (0,), t) in folders


def test_seeds_and_augmentation_get_run_folders_of_their_own(tmp_path):
    plain, augmented = _bench(tmp_path), _bench(tmp_path, augment=True)
    assert plain.distilled_run("lenet5", (0,), 2.0) != plain.distilled_run("lenet5", (0,), 2.0, seed=1)
    assert plain.distilled_run("lenet5", (0,), 2.0) != augmented.distilled_run("lenet5", (0,), 2.0)
    assert plain.alone_run("lenet5", 1) != augmented.alone_run("lenet5", 1)
    # with augmentation the teachers run live (a logit cache cannot hold augmented views)
    assert "_live" in augmented.distilled_run("lenet5", (0,), 2.0).name
    assert "_cache" in plain.distilled_run("lenet5", (0,), 2.0).name


def test_after_the_sweep_the_plan_holds_the_later_stages_runs(tmp_path):
    bench = _bench(tmp_path, augment=True)
    plan = planned_runs(bench, 4.0)
    assert {kw["T"] for _, kw in plan} == {4.0}
    throughput = [kw for _, kw in plan if kw.get("augment") is False]
    assert sorted(kw["cache"] for kw in throughput) == [False, True]  # cached against live, no augmentation
    assert any(kw.get("omit") for _, kw in plan)
    assert any(len(kw["seeds"]) == 3 for _, kw in plan)  # the ensemble of teachers
