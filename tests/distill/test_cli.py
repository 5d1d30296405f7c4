"""netshrink distill: a whole run from teacher checkpoints, and one-line refusals that write nothing."""

import pytest
import torch

from netshrink.cli import main
from netshrink.distillation.cache import CACHE_NAME
from netshrink.models import create
from netshrink.train import load_model, save_model
from netshrink.train.fit import MODEL_NAME
from tests.models import INPUT_SHAPE


@pytest.fixture
def teacher_file(teacher, tmp_path):
    path = tmp_path / "teacher.safetensors"
    save_model(path, teacher)
    return str(path)


def test_distill_with_cache_omitted_class_and_bias(teacher_file, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["distill", "--teacher", teacher_file, "--student", "lenet300_100", "--data", "digits", "--T", "4",
            "--alpha", "1", "--epochs", "3", "--batch-size", "32", "--cache-teacher", "--omit-class", "3",
            "--adjust-bias", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "bias of classes [3] raised by" in printed and "test accuracy" in printed
    assert (out / CACHE_NAME).is_file()
    student = load_model(out / MODEL_NAME)
    assert student(torch.zeros(2, *INPUT_SHAPE)).shape == (2, 10)


def test_distill_from_an_ensemble_of_checkpoints(teacher_file, tmp_path, capsys):
    torch.manual_seed(1)
    second = tmp_path / "second.safetensors"
    save_model(second, create("convnet", input_shape=INPUT_SHAPE, widths=(8, 8, 16, 16, 16), hidden=32))
    argv = ["distill", "--teacher", teacher_file, "--teacher", str(second), "--student", "lenet5", "--data",
            "digits", "--epochs", "1", "--out", str(tmp_path / "run"), "--no-progress"]
    assert main(argv) == 0
    assert (tmp_path / "run" / MODEL_NAME).is_file()


def _fails_with(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("netshrink: error:") and message in err and err.count("\n") == 1


@pytest.mark.parametrize("extra, message", [(["--T", "0"], "T must be positive"),
                                            (["--alpha", "1.5"], "alpha must be in [0, 1]"),
                                            (["--student", "missing.safetensors"], "neither a zoo model")])
def test_bad_values_are_one_line_errors_that_write_nothing(extra, message, teacher_file, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["distill", "--teacher", teacher_file, "--student", "lenet300_100", "--data", "digits",
            "--out", str(out), *extra]
    _fails_with(argv, message, capsys)
    assert not out.exists()


def test_output_sizes_that_differ_are_refused(tmp_path, capsys):
    path = tmp_path / "five.safetensors"
    save_model(path, create("convnet", input_shape=INPUT_SHAPE, num_classes=5, widths=(8, 8, 16, 16, 16), hidden=32))
    out = tmp_path / "run"
    _fails_with(["distill", "--teacher", str(path), "--student", "lenet300_100", "--data", "digits",
                 "--out", str(out)], "same outputs", capsys)
    assert not out.exists()


def test_cached_logits_of_other_data_are_refused(teacher_file, tmp_path, capsys):
    out = tmp_path / "run"
    base = ["distill", "--teacher", teacher_file, "--student", "lenet300_100", "--data", "digits",
            "--epochs", "1", "--cache-teacher", "--out", str(out), "--no-progress"]
    assert main(base + ["--seed", "0"]) == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    _fails_with(base + ["--seed", "1"], "other training data", capsys)  # another validation split
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
