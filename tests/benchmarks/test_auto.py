"""The auto benchmark's targets and section: a row is judged on the mean over its seeds, its cost
on the worst seed, the uniform margin per seed; rows not run are named, never judged."""

from benchmarks import auto as bench


def _seed(seed, rate, test, baseline=0.90, minutes=30.0, uniform=None):
    found = {"seed": seed, "rate": rate, "test_accuracy": test, "baseline_test_accuracy": baseline,
             "search_minutes": minutes, "points": 5}
    if uniform is not None:
        found["uniform"] = {"chosen": {"label": "s90-cluster4", "test_accuracy": uniform}}
    return found


def test_a_row_meets_its_drop_on_the_mean_and_its_rate_on_the_worst_seed():
    row = bench.BY_KEY["lenet300_100-45x"]
    rate, drop, minutes = bench.row_targets(row, [_seed(0, 46.0, 0.898), _seed(1, 44.9, 0.897), _seed(2, 47, 0.8)])
    assert (rate["value"], rate["met"]) == (44.9, False)
    assert abs(drop["value"] - (0.2 + 0.3 + 10.0) / 3) < 1e-9 and not drop["met"] and drop["std"] > 0
    assert minutes["met"]
    _, drop, _ = bench.row_targets(row, [_seed(s, 46.0, 0.897) for s in range(3)])
    assert drop["met"] and abs(drop["value"] - 0.3) < 1e-9


def test_the_uniform_row_is_judged_on_the_points_above_the_uniform_setting():
    row = bench.BY_KEY["lenet5-80x"]
    seeds = [_seed(s, 81.0, 0.90, uniform=0.893) for s in range(3)]
    margin = bench.row_targets(row, seeds)[-1]
    assert abs(margin["value"] - 0.7) < 1e-9 and margin["met"]
    seeds[0]["uniform"]["chosen"]["test_accuracy"] = 0.91
    assert not bench.row_targets(row, seeds)[-1]["met"]
    for s in seeds:  # no uniform setting within the bytes: no margin shown, never a vacuous pass
        s["uniform"]["chosen"] = None
    assert not bench.row_targets(row, seeds)[-1]["met"]


def test_the_section_names_rows_not_run_and_each_seed_measured():
    row = bench.BY_KEY["lenet300_100-45x"]
    seeds = [_seed(s, 46.0, 0.897) for s in range(3)]
    doc = {"targets": bench.row_targets(row, seeds), "not_run": ["lenet5-50x"],
           "measurements": {"rows": {row.key: {"date": "2026-12-03T10:00:00+00:00", "commit": "abc1234",
                                               "seeds": seeds}}}}
    text = bench.markdown(doc)
    assert "Not run yet: lenet5-50x." in text
    assert text.count("| lenet300_100-45x |") == 3 and "MISSED" not in text
