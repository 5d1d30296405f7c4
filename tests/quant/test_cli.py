"""``netshrink quantize`` and ``netshrink export``: real files, one-line errors."""

import pytest
import torch

import netshrink
from netshrink.cli import main
from netshrink.codec.inspect import inspect_file
from netshrink.train import save_model
from tests.models import TINY_MODELS


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "model.safetensors"
    save_model(path, TINY_MODELS["lenet300_100"]())
    return path


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("options,distinct,shrink", [
    (["--method", "uniform", "--bits", "4"], 15, 4),
    (["--method", "uniform", "--bits", "3", "--scheme", "affine", "--calibration", "mse"], 8, 4),
    (["--method", "cluster", "--bits", "3", "--init", "density"], 8, 4),
    (["--method", "binary", "--binary-method", "binaryconnect"], 2, 2),  # first and last layers kept fp32
])
def test_quantize_writes_a_smaller_file_of_quantized_weights(checkpoint, tmp_path, capsys, options, distinct, shrink):
    code, out, _ = run(["quantize", checkpoint, *options, "--out", tmp_path / "q"], capsys)
    assert code == 0
    model = netshrink.load(tmp_path / "q" / "model.nsk")
    assert int(torch.unique(model.fc2.weight).numel()) <= distinct
    assert (tmp_path / "q" / "model.nsk").stat().st_size < checkpoint.stat().st_size / shrink
    assert "smaller" in out


def test_gptq_on_a_checkpoint_calibrates_on_the_datas_validation_images(checkpoint, tmp_path, capsys):
    code, _, err = run(["quantize", checkpoint, "--method", "gptq", "--bits", "4", "--group-size", "16",
                        "--data", "digits", "--out", tmp_path / "q"], capsys)
    assert code == 2 and "--group-size 16 does not divide the 300 input columns of layer 'fc2'" in err
    assert not (tmp_path / "q").exists()
    code, out, _ = run(["quantize", checkpoint, "--method", "gptq", "--bits", "4", "--act-order", "--asymmetric",
                        "--data", "digits", "--out", tmp_path / "q"], capsys)
    assert code == 0 and "test accuracy" in out
    model = netshrink.load(tmp_path / "q" / "model.nsk")
    assert netshrink.get_log(model)[-2]["config"]["act_order"] is True
    assert netshrink.get_log(model)[-2]["config"]["asymmetric"] is True
    encodings = {row["name"]: row["encoding"] for row in inspect_file(tmp_path / "q" / "model.nsk")}
    assert encodings["fc2.weight"] == "group_int"


@pytest.mark.slow
def test_quantize_with_training_epochs_reports_accuracy(checkpoint, tmp_path, capsys):
    code, out, _ = run(["quantize", checkpoint, "--method", "cluster", "--bits", "2", "--epochs", "1",
                        "--data", "digits", "--out", tmp_path / "q"], capsys)
    assert code == 0 and "test accuracy" in out and "(before" in out


@pytest.mark.parametrize("options,message", [
    (["--method", "uniform", "--bits", "9"], "bits must be an integer from 2 to 8"),
    (["--method", "cluster", "--bits", "0"], "bits must be an integer from 1 to 8"),
    (["--method", "binary", "--bits", "4"], "binary weights have 1 bit"),
    (["--method", "cluster", "--epochs", "2"], "--epochs needs training data"),
    (["--method", "uniform", "--asymmetric"], "--asymmetric is not an option of --method uniform"),
])
def test_quantize_bad_input_is_one_line(checkpoint, tmp_path, capsys, options, message):
    code, _, err = run(["quantize", checkpoint, *options, "--out", tmp_path / "q"], capsys)
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "q").exists()


def test_quantize_refuses_non_finite_weights(tmp_path, capsys):
    torch.manual_seed(0)
    model = TINY_MODELS["lenet300_100"]()
    with torch.no_grad():
        model.fc1.weight[0, 0] = float("nan")
    save_model(tmp_path / "nan.safetensors", model)
    code, _, err = run(["quantize", tmp_path / "nan.safetensors", "--out", tmp_path / "q"], capsys)
    assert code == 2 and "'fc1' has 1 NaN or infinite weight(s)" in err and err.count("\n") == 1


@pytest.mark.slow
def test_export_writes_checked_fp32_and_int8_onnx(checkpoint, tmp_path, capsys):
    code, out, _ = run(["export", checkpoint, "--onnx", tmp_path / "m.onnx", "--int8", "--data", "digits",
                        "--calibration-samples", "64"], capsys)
    assert code == 0
    assert (tmp_path / "m.onnx").is_file() and (tmp_path / "m.int8.onnx").is_file()
    difference = float(out.split("max abs difference ")[1].split()[0])
    assert difference <= 1e-4
    assert "test accuracy" in out


def test_quantize_activations_calibrated_on_validation_images(checkpoint, tmp_path, capsys):
    code, out, _ = run(["quantize", checkpoint, "--bits", "8", "--activation-bits", "6", "--data", "digits",
                        "--out", tmp_path / "q"], capsys)
    assert code == 0 and "test accuracy" in out
    record = netshrink.get_log(netshrink.load(tmp_path / "q" / "model.nsk"))[0]
    assert set(record["activation_grids"]) == {"fc1", "fc2", "fc3"}
    code, _, err = run(["quantize", checkpoint, "--method", "cluster", "--activation-bits", "6",
                        "--out", tmp_path / "q2"], capsys)
    assert code == 2 and "--activation-bits needs --method uniform and --data" in err
