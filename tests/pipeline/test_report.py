"""What the demo table and the HTML report say, checked on the data they are made from (no images)."""

import torch
from torch import nn

from netshrink.demo import comparison_table
from netshrink.measure import measure_latency
from netshrink.measure.macs import EVERY_EXIT
from netshrink.report.html import _macs_note
from netshrink.report.plots import operating_curve, point_label, weight_rows


def _row(stage, verb, file_bytes, rate, macs, counted=None):
    return {"stage": stage, "verb": verb, "val_accuracy": 0.9, "file_bytes": file_bytes, "rate": rate,
            "macs": macs, "latency_ms": 0.05, "macs_counted": counted}


REPORT = {
    "stages": [_row(0, "baseline", 1_066_896, 1.0, 266_200), _row(1, "low_rank", 418_736, 2.5, 124_224),
               _row(2, "early_exit", 429_272, 2.5, 127_224, EVERY_EXIT)],
    "final": {"baseline_test_accuracy": 0.9, "test_accuracy": 0.88, "file_bytes": 429_272, "rate": 2.5,
              "baseline_dense_fp32_bytes": 1_066_896},
}


def test_the_demo_table_marks_the_macs_of_exits_and_names_the_rate_baseline():
    lines = comparison_table(REPORT).splitlines()
    assert lines[2].split()[:4] == ["0:baseline", "90.00%", "1,066,896", "1.0x"]
    assert lines[3].split()[4] == "124,224" and lines[4].split()[4] == "127,224*"
    assert f"* {EVERY_EXIT}" in lines[5] and lines[5].startswith("MACs: dense multiply-accumulates of one sample")
    assert "original model as dense fp32 (1,066,896 bytes" in lines[6]


def test_the_html_report_says_what_the_macs_column_counts():
    note = _macs_note(REPORT["stages"])
    assert f"stage(s) 2: {EVERY_EXIT}" in note
    assert _macs_note(REPORT["stages"][:2]) == "<p>MACs: dense multiply-accumulates of one sample.</p>"


PROFILE = [  # the profile's order: fixed exits, then the calibrated threshold (cheaper than exit 1)
    {"kind": "exit", "value": 0, "accuracy": 0.8465, "macs": 96_224},
    {"kind": "exit", "value": 1, "accuracy": 0.9037, "macs": 124_224},
    {"kind": "threshold", "value": 0.7755164504051208, "accuracy": 0.8992, "macs": 105_952.83},
]


def test_operating_points_are_joined_in_order_of_macs_with_short_labels():
    curve = operating_curve(PROFILE)
    assert [macs for macs, _, _ in curve] == sorted(p["macs"] for p in PROFILE)
    assert [label for _, _, label in curve] == ["exit 0", "threshold 0.776", "exit 1"]
    assert point_label({"kind": "width", "value": 0.25}) == "width 0.25"


def test_the_kept_weights_plot_takes_weight_tensors_only():
    layers = [{"name": "fc1.weight", "shape": [300, 64], "weights": 19_200, "kept_pct": 20.0},
              {"name": "fc1.bias", "shape": [300], "weights": 300, "kept_pct": 100.0},
              {"name": "bn.weight", "shape": [16], "weights": 16, "kept_pct": 100.0},
              {"name": "exit_fixed", "shape": [], "weights": 1, "kept_pct": 100.0},
              {"name": "conv.weight", "shape": [16, 1, 3, 3], "weights": 144, "kept_pct": 20.1}]
    assert [r["name"] for r in weight_rows(layers)] == ["fc1.weight", "conv.weight"]
    without_shapes = [{k: v for k, v in r.items() if k != "shape"} for r in layers]  # an older report
    assert [r["name"] for r in weight_rows(without_shapes)] == ["fc1.weight", "bn.weight", "conv.weight"]


class _Recorder(nn.Module):
    """Keeps every batch it is run on."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.clone())
        return self.fc(x)


def test_latency_is_measured_on_the_inputs_given_batch_after_batch():
    inputs = torch.arange(40, dtype=torch.float32).view(10, 4)
    model = _Recorder()
    result = measure_latency(model, (4,), batch_size=2, warmup=1, repeats=6, inputs=inputs)
    assert result["runs"] == 6
    batches = [inputs[i:i + 2] for i in range(0, 10, 2)]
    timed = model.seen[1:]
    assert all(torch.equal(x, batches[i % 5]) for i, x in enumerate(timed))  # real samples, cycled
    model.seen.clear()
    measure_latency(model, (4,), batch_size=16, warmup=0, repeats=1, inputs=inputs)  # fewer than a batch
    assert model.seen[0].shape == (16, 4) and torch.equal(model.seen[0][:10], inputs)
