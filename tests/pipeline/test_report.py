"""What the demo table and the HTML report say, checked on the data they are made from (no images)."""

from netshrink.demo import comparison_table
from netshrink.measure.macs import EVERY_EXIT
from netshrink.report.html import _macs_note


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
