import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file
from torch import nn

from netshrink.measure import (
    count_macs,
    count_macs_per_module,
    count_nonzero,
    count_parameters,
    dense_fp32_bytes,
    format_layer_table,
    fp32_safetensors_bytes,
    layer_table,
    measure_latency,
    measure_model,
)
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


def test_layer_table_and_summary(tiny_model, digits):
    rows = layer_table(tiny_model, INPUT_SHAPE)
    assert rows and sum(r["params"] for r in rows) <= count_parameters(tiny_model)
    assert all(r["macs"] > 0 for r in rows)
    assert "total" in format_layer_table(rows)
    report = measure_model(tiny_model, INPUT_SHAPE, digits.test, repeats=3)
    assert 0.0 <= report["accuracy"] <= 1.0
    assert set(report["latency"]) == {"batch_1", "batch_256"}
    assert report["macs"] == sum(r["macs"] for r in rows)


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
