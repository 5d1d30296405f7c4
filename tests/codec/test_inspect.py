"""inspect_file / inspect_report: Deep Compression Table 2 numbers measured from the file."""

import os

import pytest
import torch

from netshrink.codec import inspect_report as exported_report
from netshrink.codec.container import save
from netshrink.codec.inspect import inspect_file, inspect_report
from netshrink.core.errors import NetshrinkFormatError
from netshrink.measure.size import dense_fp32_bytes
from netshrink.models import create
from tests.codec.test_container import make_weight


@pytest.fixture
def compressed(tmp_path):
    model = create("lenet300_100", in_features=64)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model.fc1.weight.copy_(make_weight("pruned_clustered", (300, 64), generator))
        model.fc2.weight.copy_(make_weight("int4", (100, 300), generator))
    path = tmp_path / "m.nsk"
    save(model, path, entropy="none")
    return model, path


def test_rows_describe_every_tensor(compressed):
    model, path = compressed
    rows = {row["name"]: row for row in inspect_file(path)}
    assert set(rows) == set(model.state_dict())
    fc1 = rows["fc1.weight"]
    assert fc1["encoding"] == "sparse+codebook"
    assert fc1["weights"] == 300 * 64
    assert fc1["kept"] == int(torch.count_nonzero(model.fc1.weight))
    assert 9.0 < fc1["kept_pct"] < 11.0
    assert fc1["bits_per_index"] is not None and fc1["bits_per_weight"] <= 5.0
    assert fc1["rate"] > 10
    fc2 = rows["fc2.weight"]
    assert fc2["encoding"] == "int" and fc2["bits_per_weight"] == pytest.approx(4.0)
    assert fc2["bits_per_index"] is None
    assert rows["fc1.bias"]["encoding"] in ("dense", "float_bytes")


def test_report_has_a_line_per_tensor_and_totals(compressed):
    model, path = compressed
    report = inspect_report(path)
    assert exported_report(path) == report
    lines = report.splitlines()
    assert "bits/idx" in lines[0] and "rate" in lines[0]
    for name in model.state_dict():
        assert any(line.startswith(name) for line in lines)
    total = lines[-1]
    assert f"file {os.path.getsize(path):,} B vs original dense fp32 {dense_fp32_bytes(model):,} B" in total


def test_inspect_validates_the_file(tmp_path):
    (tmp_path / "bad.nsk").write_bytes(b"0" * 64)
    with pytest.raises(NetshrinkFormatError):
        inspect_report(tmp_path / "bad.nsk")
