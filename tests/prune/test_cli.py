import pytest
import torch

from netshrink.cli import main
from netshrink.cli.args import OUTPUT_NAME
from netshrink.codec.container import load
from netshrink.models import create
from netshrink.train import FitConfig, fit, save_model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, digits):
    torch.manual_seed(0)
    model = fit(create("lenet300_100", in_features=64), digits, FitConfig(epochs=2, batch_size=32),
                progress=False).model
    path = tmp_path_factory.mktemp("trained") / "model.safetensors"
    save_model(path, model)
    return path


def _prune(checkpoint, out, *options):
    return main(["prune", str(checkpoint), "--data", "digits", "--epochs", "1", "--out", str(out),
                 *options])


def _weight_sparsity(model) -> float:
    weights = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


@pytest.mark.parametrize("schedule", ["oneshot", "gradual", "iterative"])
def test_prune_writes_the_fine_tuned_file_and_prints_the_table(checkpoint, tmp_path, capsys, schedule):
    out = tmp_path / "out"
    assert _prune(checkpoint, out, "--sparsity", "0.9", "--scope", "global", "--schedule", schedule,
                  "--rounds", "2") == 0
    printed = capsys.readouterr().out
    assert "fc1" in printed and "test accuracy" in printed and "fewer" in printed
    model = load(out / OUTPUT_NAME)
    assert _weight_sparsity(model) == pytest.approx(0.9, abs=1e-3)
    assert sorted(p.name for p in out.iterdir()) == [OUTPUT_NAME]


def test_structured_prune_writes_a_smaller_model(checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    assert _prune(checkpoint, out, "--structured", "--amount", "0.5") == 0
    model = load(out / OUTPUT_NAME)
    assert (model.fc1.out_features, model.fc2.out_features) == (150, 50)


def test_calibrated_methods_calibrate_on_the_datas_validation_images(checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["prune", str(checkpoint), "--data", "digits", "--method", "wanda", "--nm", "2:4",
                 "--out", str(out)]) == 0
    assert "test accuracy" in capsys.readouterr().out
    model = load(out / OUTPUT_NAME)
    assert int((model.fc1.weight.reshape(-1, 4) != 0).sum(dim=1).max()) <= 2
    assert _weight_sparsity(model) == pytest.approx(0.5, abs=1e-3)


@pytest.mark.parametrize("options, message", [
    (["--sparsity", "1.5"], "--sparsity must be a number in [0, 1)"),
    (["--sparsity", "-0.1"], "--sparsity must be a number in [0, 1)"),
    (["--structured", "--amount", "1"], "--amount must be a number in [0, 1)"),
    ([], "say what to prune"),
    (["--sparsity", "0.5", "--schedule", "gradual", "--epochs", "0"], "give --epochs 1 or more"),
    (["--method", "sparsegpt", "--sparsity", "0.5", "--scope", "global"], "--scope is an option of --method magnitude"),
    (["--sparsity", "0.5", "--nm", "2:4"], "--nm is an option of the calibrated methods"),
    (["--sparsity", "0.5", "--asymmetric"], "--asymmetric is an option of the calibrated methods"),
    (["--method", "wanda", "--sparsity", "0.5", "--asymmetric"], "--asymmetric is not an option of --method wanda"),
    (["--method", "wanda", "--nm", "2:3"], "multiple of 3"),
    (["--method", "obs", "--sparsity", "0.5"], "unknown --method 'obs'; choose one of magnitude, sparsegpt, wanda"),
    (["--method", "wanda", "--sparsity", "0.5", "--calibration-data", "x.txt"], "--calibration-data is text for"),
])
def test_bad_input_is_one_line_and_writes_nothing(checkpoint, tmp_path, capsys, options, message):
    out = tmp_path / "out"
    assert _prune(checkpoint, out, *options) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not out.exists()


def test_a_missing_checkpoint_or_wrong_data_is_one_line(tmp_path, capsys):
    out = tmp_path / "out"
    assert _prune(tmp_path / "missing.safetensors", out, "--sparsity", "0.5") == 2
    assert "does not exist" in capsys.readouterr().err
    wide = tmp_path / "wide.safetensors"
    save_model(wide, create("lenet300_100"))  # 784 inputs, not digits' 64
    assert _prune(wide, out, "--sparsity", "0.5") == 2
    err = capsys.readouterr().err.strip()
    assert "does not accept" in err and "\n" not in err
    assert not out.exists()


def test_a_fresh_process_loads_the_file_without_importing_the_pruning_family(checkpoint, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "out"
    assert _prune(checkpoint, out, "--structured", "--amount", "0.5", "--sparsity", "0.5") == 0
    script = ("import netshrink; "
              f"print(netshrink.load({str(out / OUTPUT_NAME)!r}).fc1.out_features)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "150"
