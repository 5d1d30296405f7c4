import torch
from torch import nn

from netshrink.measure import (
    count_macs,
    count_macs_per_module,
    count_nonzero,
    count_parameters,
    dense_fp32_bytes,
    format_layer_table,
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


def test_dense_bytes_is_a_real_file_size():
    model = nn.Linear(100, 10)
    size = dense_fp32_bytes(model)
    assert 1010 * 4 < size < 1010 * 4 + 512  # the data plus a small safetensors header
    assert dense_fp32_bytes(model.half()) == size  # measured as fp32 whatever the dtype


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
