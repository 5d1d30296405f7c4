"""One compression-rate baseline: the original model's dense fp32 bytes, recorded before the first
technique, carried by the .nsk file, and labelled when an older file lacks it."""

import json

import pytest
import safetensors.numpy
import torch
from safetensors import safe_open

from netshrink.arch import LowRank, low_rank_
from netshrink.codec.container import load, save
from netshrink.codec.document import pack_document, read_document
from netshrink.codec.inspect import inspect_report
from netshrink.codec.validate import METADATA_KEY, ORIGINAL_BYTES_KEY
from netshrink.core import finalize_
from netshrink.core.errors import NetshrinkFormatError
from netshrink.measure.size import Baseline, dense_fp32_bytes, fp32_baseline
from tests.models import TINY_MODELS


def _rewrite_document(path, edit):
    """Rewrite a .nsk file's metadata document through ``edit(doc)`` (an older or a corrupt file)."""
    with safe_open(str(path), framework="numpy") as handle:
        doc = read_document(handle.metadata()[METADATA_KEY])
        streams = handle.get_tensor("streams")
    edit(doc)
    text = json.dumps(doc, separators=(",", ":"))
    path.write_bytes(safetensors.numpy.save({"streams": streams}, metadata={METADATA_KEY: pack_document(text)}))


@pytest.fixture
def factored(tmp_path):
    """A tiny LeNet-300-100 whose fc1 was factored (its dense fp32 size shrank), saved twice over."""
    torch.manual_seed(0)
    model = TINY_MODELS["lenet300_100"]()
    original = dense_fp32_bytes(model)
    low_rank_(model, LowRank(rank=8, layers=("fc1",)))
    finalize_(model)
    save(model, tmp_path / "first.nsk")
    save(load(tmp_path / "first.nsk"), tmp_path / "m.nsk")  # carried on through load and save
    return original, tmp_path / "m.nsk"


def test_the_original_size_is_recorded_before_the_first_technique_and_travels_in_the_file(factored):
    original, path = factored
    model = load(path)
    assert dense_fp32_bytes(model) < original  # the current model's dense size is another number
    assert fp32_baseline(model) == Baseline(original, True)
    line = Baseline(original, True).versus(path.stat().st_size)
    assert line.startswith(f"{path.stat().st_size:,} B vs original dense fp32 {original:,} B = ")
    assert line in inspect_report(path)


def test_an_untouched_model_is_its_own_original(tmp_path):
    model = TINY_MODELS["lenet5"]()
    assert fp32_baseline(model) == Baseline(dense_fp32_bytes(model), True)
    save(model, tmp_path / "m.nsk")
    assert fp32_baseline(load(tmp_path / "m.nsk")) == Baseline(dense_fp32_bytes(model), True)


def test_an_older_file_without_the_record_falls_back_to_its_own_dense_size_labelled(factored):
    _, path = factored
    _rewrite_document(path, lambda doc: doc.pop(ORIGINAL_BYTES_KEY))
    model = load(path)
    baseline = fp32_baseline(model)
    assert baseline == Baseline(dense_fp32_bytes(model), False)
    assert "dense fp32 of this model" in baseline.describe() and "predates" in baseline.describe()
    assert baseline.versus(path.stat().st_size) in inspect_report(path)


@pytest.mark.parametrize("bad", [-1, True, "1066896", 1.5, 2 ** 51])
def test_a_bad_original_size_is_a_one_line_format_error(factored, bad):
    _, path = factored
    _rewrite_document(path, lambda doc: doc.update({ORIGINAL_BYTES_KEY: bad}))
    for read in (load, inspect_report):
        with pytest.raises(NetshrinkFormatError, match=f"^{ORIGINAL_BYTES_KEY} must be an integer in 0..") as info:
            read(path)
        assert "\n" not in str(info.value)
