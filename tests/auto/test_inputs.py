"""What the user gives auto: data as a name or a Dataset, hand recipes' points."""

import json

import pytest

from netshrink.autocompress.inputs import data_table, hand_points
from netshrink.core.errors import ConfigError
from netshrink.data import load_digits


def test_data_by_name_or_by_the_dataset_load_dataset_gave():
    assert data_table("digits") == {"name": "digits", "val_fraction": 0.1}
    assert data_table(load_digits(val_fraction=0.2)) == {"name": "digits", "val_fraction": 0.2}
    with pytest.raises(ConfigError, match="split with another seed"):
        data_table(load_digits(seed=3))
    with pytest.raises(ConfigError, match="data must be"):
        data_table(42)


def test_hand_points_from_run_reports_and_tables(tmp_path):
    report = {"recipe": "deep-compression", "final": {"file_bytes": 5000},
              "stages": [{"val_accuracy": 0.9, "macs": 10, "latency_ms": 1.0},
                         {"val_accuracy": 0.85, "macs": 8, "latency_ms": 0.5}]}
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    assert hand_points([path, {"label": "mine", "cost": 7, "val_accuracy": 0.8}], "bytes") == [
        {"label": "deep-compression", "cost": 5000.0, "val_accuracy": 0.85},
        {"label": "mine", "cost": 7.0, "val_accuracy": 0.8}]
    assert hand_points([path], "macs")[0]["cost"] == 8.0
    with pytest.raises(ConfigError, match="not a `netshrink run` report.json"):
        hand_points([tmp_path / "missing.json"], "bytes")
