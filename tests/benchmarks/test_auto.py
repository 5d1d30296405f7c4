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


def _peer_run(ours_bytes, ours_ms, ours_test, with_nncf=True):
    files = {"original_fp32": {"file_bytes": 1000, "batch1_ms": 2.0, "val_accuracy": 0.93, "test_accuracy": 0.93}}
    if with_nncf:
        files["nncf_int8"] = {"file_bytes": 250, "batch1_ms": 1.0, "val_accuracy": 0.93, "test_accuracy": 0.929}
    for seed, (size, ms, test) in enumerate(zip(ours_bytes, ours_ms, ours_test, strict=True)):
        files[f"ours_seed{seed}"] = {"file_bytes": size, "batch1_ms": ms, "val_accuracy": test, "test_accuracy": test}
    ours = {str(seed): {"chosen": "int8", "file": "x.onnx", "val_accuracy": {}} for seed in range(len(ours_bytes))}
    return {"nncf": {"file": "n.onnx", "seconds": 5.0} if with_nncf else {"reason": "nncf is not importable here"},
            "ours": ours, "files": files}


def test_the_peer_row_is_judged_on_the_worst_seed_against_nncf_and_the_mean_drop():
    row = bench.BY_KEY["convnet-nncf"]
    drop, size, speed = bench.peer_targets(row, _peer_run([100, 200, 240], [0.5, 0.9, 0.8], [0.925, 0.92, 0.93]))
    assert abs(drop["value"] - (0.5 + 1.0 + 0.0) / 3) < 1e-9 and drop["met"]
    assert (size["value"], size["met"]) == (0.96, True)
    assert (speed["value"], speed["met"]) == (0.9, True)
    _, size, speed = bench.peer_targets(row, _peer_run([100, 300, 240], [0.5, 0.9, 1.2], [0.93] * 3))
    assert not size["met"] and not speed["met"]  # one seed larger, one slower: the worst seed decides
    assert len(bench.peer_targets(row, _peer_run([100], [0.5], [0.93], with_nncf=False))) == 1  # nothing to compare


def test_the_peer_section_shows_every_file_and_why_nncf_did_not_run():
    run = {"date": "2026-12-03T10:00:00+00:00", "commit": "abc1234", "peer": _peer_run([100], [0.5], [0.93], False)}
    text = bench.peer_markdown("convnet-nncf", run)
    assert "NNCF did not run: nncf is not importable here" in text
    assert "| original_fp32 | 1,000 |" in text and "| ours_seed0 | 100 |" in text
