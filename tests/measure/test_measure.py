import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file
from torch import nn

from netshrink.dynamic import EarlyExit, early_exit_, set_exit, set_thresholds
from netshrink.measure import (
    count_macs,
    count_macs_per_module,
    count_nonzero,
    count_parameters,
    dense_fp32_bytes,
    format_layer_table,
    fp32_safetensors_bytes,
    interleaved_ms,
    layer_table,
    measure_latency,
    measure_model,
    relative_latency,
)
from netshrink.measure.layers import OUTSIDE
from netshrink.measure.macs import EVERY_EXIT, counted_path
from netshrink.models import create
from tests.models import INPUT_SHAPE


def test_macs_match_the_layer_formulas():
    lenet5 = create("lenet5")
    per = count_macs_per_module(lenet5, (1, 28, 28))
    assert per["conv1"] == 20 * 24 * 24 * 25          # out channels x out pixels x kernel
    assert per["conv2"] == 50 * 8 * 8 * 20 * 25
    assert per["fc1"] == 800 * 500 and per["fc2"] == 500 * 10
    assert count_macs(lenet5, (1, 28, 28)) == sum(per[k] for k in ("conv1", "conv2", "fc1", "fc2"))
    assert count_macs(create("lenet300_100"), (1, 28, 28)) == 784 * 300 + 300 * 100 + 100 * 10


def test_nonzero_counts_pruned_weights():
    model = nn.Linear(10, 10)
    total = count_parameters(model)
    with torch.no_grad():
        model.weight[:5] = 0
    assert count_nonzero(model) == total - 50


def _real_file_bytes(model: nn.Module, tmp_path) -> int:
    tensors = {k: (t.float() if t.is_floating_point() else t).contiguous() for k, t in model.state_dict().items()}
    save_file(tensors, tmp_path / "dense.safetensors")
    return (tmp_path / "dense.safetensors").stat().st_size


def test_dense_bytes_is_a_real_file_size(tmp_path, tiny_model):
    assert dense_fp32_bytes(tiny_model) == _real_file_bytes(tiny_model, tmp_path)
    assert dense_fp32_bytes(tiny_model.half()) == _real_file_bytes(tiny_model, tmp_path)  # counted as fp32


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(
    st.text(min_size=1, max_size=12),
    st.tuples(st.lists(st.integers(0, 40), max_size=3),
              st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64,
                               torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool])),
    max_size=6))
def test_computed_dense_size_equals_what_safetensors_writes(tmp_path_factory, spec):
    layout = {name: (shape, dtype.is_floating_point, dtype) for name, (shape, dtype) in spec.items()}
    tensors = {name: torch.zeros(shape, dtype=torch.float32 if is_float else dtype)
               for name, (shape, is_float, dtype) in layout.items()}
    path = tmp_path_factory.mktemp("st") / "d.safetensors"
    save_file(tensors, path)
    assert fp32_safetensors_bytes(layout) == path.stat().st_size


def test_dense_size_of_a_huge_declared_layout_allocates_nothing():
    size = fp32_safetensors_bytes({"w": ([2**20, 2**20], True, torch.float32)})  # a 4 TiB tensor
    assert size > 4 * 2**40


def test_latency_reports_median_and_threads(tiny_model):
    before = torch.get_num_threads()
    result = measure_latency(tiny_model, INPUT_SHAPE, batch_size=2, threads=1, warmup=2, repeats=5)
    assert result["threads"] == 1 and result["runs"] >= 5
    assert 0 < result["p10_ms"] <= result["median_ms"] <= result["p90_ms"]
    assert torch.get_num_threads() == before and tiny_model.training


def _has_attention(model: nn.Module) -> bool:
    return any(isinstance(m, nn.MultiheadAttention) for m in model.modules())


def test_layer_table_has_one_row_per_weighted_layer(tiny_model):
    rows = layer_table(tiny_model, INPUT_SHAPE)
    layers = {name: m for name, m in tiny_model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}
    if rows[-1]["layer"] == OUTSIDE:  # MACs outside the weighted layers, no parameters
        assert rows[-1]["macs"] > 0 and rows[-1]["params"] == 0
        rows = rows[:-1]
    assert [r["layer"] for r in rows] == list(layers)
    for row in rows:
        weight, bias = layers[row["layer"]].weight, layers[row["layer"]].bias
        assert row["params"] == weight.numel() + (bias.numel() if bias is not None else 0)
        assert row["shape"] == list(weight.shape) and row["fp32_bytes"] == 4 * row["params"]
    # nn.MultiheadAttention runs its projections with F.linear inside its own forward, so the flop
    # counter books them (and the attention products) to the attention module, not to a row
    attention = _has_attention(tiny_model)
    assert all(r["macs"] > 0 for r in rows if not (attention and r["layer"].endswith(".out_proj")))


def test_layer_table_of_lenet5_matches_the_paper():
    # Han et al. 2016, Table 3: LeNet-5 has 431K weights, all in its four weighted layers
    model = create("lenet5")
    with torch.no_grad():
        model.fc1.weight[:100] = 0  # 100 output rows of 800 inputs pruned
    rows = layer_table(model, (1, 28, 28))
    assert [r["params"] for r in rows] == [20 * 25 + 20, 50 * 20 * 25 + 50, 800 * 500 + 500, 500 * 10 + 10]
    assert sum(r["params"] for r in rows) == count_parameters(model) == 431_080
    assert rows[2]["nonzero"] == 800 * 500 + 500 - 100 * 800
    total = format_layer_table(rows).splitlines()[-1].split()
    assert total[:3] == ["total", "431,080", f"{431_080 - 80_000:,}"]


def test_summary_measures_the_model_it_is_given(tiny_model, digits):
    with torch.no_grad():
        expected = float((tiny_model.eval()(digits.test.x).argmax(1) == digits.test.y).float().mean())
    rows = layer_table(tiny_model, INPUT_SHAPE)
    report = measure_model(tiny_model, INPUT_SHAPE, digits.test, repeats=3)
    assert report["accuracy"] == expected
    assert report["params"] == count_parameters(tiny_model)
    assert set(report["latency"]) == {"batch_1", "batch_256"}
    assert report["latency"]["batch_256"]["batch_size"] == 256
    assert report["macs"] == count_macs(tiny_model, INPUT_SHAPE)
    assert report["macs"] == sum(r["macs"] for r in rows)  # the rows add up to the total
    assert (rows[-1]["layer"] == OUTSIDE) == _has_attention(tiny_model)


def test_latency_restores_threads_and_mode_when_the_forward_fails():
    model = nn.Linear(10, 2)
    before = torch.get_num_threads()
    model.train()
    try:
        measure_latency(model, (7,), threads=1, warmup=1, repeats=1)  # wrong input width
    except RuntimeError:
        pass
    else:
        raise AssertionError("a wrong input shape must fail")
    assert torch.get_num_threads() == before and model.training


def test_an_early_exit_models_rows_add_up_to_its_total_whichever_way_it_runs(digits):
    """The stages early exits run are torch.fx wrappers; the counter named their layers under them
    (the demo's table summed to 96,224 against a total of 127,224)."""
    model = early_exit_(create("lenet300_100", in_features=64), EarlyExit(after=("fc1",))).eval()
    layer_macs = {"fc1": 64 * 300, "fc2": 300 * 100, "fc3": 100 * 10, "exit_heads.0": 300 * 10}
    every_stage = sum(layer_macs[name] for name in ("fc1", "fc2", "fc3"))
    for setting, total in ((lambda: set_thresholds(model, 0.5), every_stage + layer_macs["exit_heads.0"]),
                           (lambda: set_exit(model, 0), layer_macs["fc1"] + layer_macs["exit_heads.0"]),
                           (lambda: set_thresholds(model, 1.0), every_stage)):
        setting()
        rows = layer_table(model, INPUT_SHAPE)
        assert sum(r["macs"] for r in rows) == count_macs(model, INPUT_SHAPE) == total
        assert {r["layer"]: r["macs"] for r in rows if r["macs"]}.items() <= layer_macs.items()
    set_thresholds(model, 0.5)
    assert counted_path(model) == EVERY_EXIT  # leaving by confidence: the most one sample costs
    set_exit(model, 1)
    assert counted_path(model) is None


def test_interleaved_runners_take_turns_after_one_warm_up_each():
    calls: list[str] = []
    ms = interleaved_ms({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, rounds=3)
    assert calls == ["a", "b"] * 4  # one warm-up each, then three turns
    assert set(ms) == {"a", "b"} and all(value >= 0 for value in ms.values())


def test_relative_latency_is_the_models_time_over_the_references_and_restores_state(monkeypatch):
    """The ratio of the interleaved medians, each runner running its own model on the batch, at
    the thread count asked for; no speed is asserted (the timing is replaced)."""
    from netshrink.measure import latency as latency_module

    torch.manual_seed(0)
    model, reference, x = nn.Linear(8, 3), nn.Linear(8, 3), torch.randn(1, 8)
    model.train()
    reference.eval()
    seen = {}

    def fake_interleaved(runners, rounds, min_seconds=0.0):
        seen.update({name: run() for name, run in runners.items()}, threads=torch.get_num_threads())
        return {"model": 3.0, "reference": 2.0}

    monkeypatch.setattr(latency_module, "interleaved_ms", fake_interleaved)
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # the suite runs on 1: a thread count the timing (1 thread) must give back
    try:
        assert relative_latency(model, reference, x, rounds=5) == 1.5
        assert torch.get_num_threads() == 2 and model.training and not reference.training
    finally:
        torch.set_num_threads(before)
    assert seen["threads"] == 1
    assert torch.equal(seen["model"], model.eval()(x)) and torch.equal(seen["reference"], reference(x))


def test_interleaved_runners_keep_taking_turns_for_the_minimum_time(monkeypatch):
    """A clock that advances 1 ms a reading: whole turns until 50 ms have passed, not one."""
    from types import SimpleNamespace

    from netshrink.measure import latency as latency_module

    ticks = iter(range(10**6))
    monkeypatch.setattr(latency_module, "time", SimpleNamespace(perf_counter=lambda: next(ticks) / 1000))
    calls: list[str] = []
    interleaved_ms({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, rounds=1, min_seconds=0.05)
    assert calls.count("a") == calls.count("b")
    assert 2 < calls.count("a") < 50  # far more than the one round asked for, and it ends
