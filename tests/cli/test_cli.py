import subprocess
import sys

import numpy as np
import pytest

from netshrink.cli import build_parser, main
from netshrink.models import list_models

COMMANDS = ["models", "train", "eval", "inspect", "demo"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    assert "usage: netshrink " + command in capsys.readouterr().out


def test_parser_knows_every_command():
    choices = build_parser()._subparsers._group_actions[0].choices
    assert set(COMMANDS) <= set(choices)


def test_models_lists_the_zoo(capsys):
    assert main(["models"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert set(lines) == set(list_models())
    # Han et al. 2016, Tables 2 and 3 on 28x28 inputs; digits' 8x8 inputs shrink the first fc layer
    assert "266,610 parameters on 1x28x28" in lines["lenet300_100"]
    assert f"{266_610 - (784 - 64) * 300:,} on 1x8x8" in lines["lenet300_100"]
    assert "431,080 parameters on 1x28x28" in lines["lenet5"]


@pytest.mark.parametrize("argv,message", [
    (["eval", "missing.nsk", "--data", "digits"], "does not exist"),
    (["train", "--model", "nope", "--out", "x"], "unknown model"),
    (["train", "--model", "lenet5", "--data", "imagenet", "--out", "x"], "unknown data"),
    (["train", "--model", "lenet5", "--model-kwargs", "{bad", "--data", "digits", "--out", "x"],
     "not valid JSON"),
    (["train", "--model", "lenet300_100", "--data", "digits", "--epochs", "2", "--warmup-epochs", "3",
      "--out", "x"], "--warmup-epochs must be in [0, --epochs 2], got 3"),
    (["train", "--model", "lenet300_100", "--data", "digits", "--epochs", "0", "--out", "x"],
     "--epochs must be at least 1, got 0"),
])
def test_bad_input_is_one_line_and_nonzero(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_bad_npz_through_the_real_command(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, x_train=np.zeros((3, 4, 4)))
    proc = subprocess.run([sys.executable, "-m", "netshrink.cli", "train", "--model", "lenet5",
                           "--data", str(path), "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("netshrink: error:") and "lacks" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


def test_debug_shows_the_traceback():
    from netshrink.core.errors import ConfigError

    with pytest.raises(ConfigError):
        main(["--debug", "eval", "missing.nsk", "--data", "digits"])


def _saved_nsk(tmp_path):
    import torch

    from netshrink.codec.container import save
    from tests.models import TINY_MODELS

    torch.manual_seed(0)
    model = TINY_MODELS["lenet300_100"]()
    path = tmp_path / "m.nsk"
    save(model, path)
    return path


def test_inspect_prints_the_layer_table(tmp_path, capsys):
    path = _saved_nsk(tmp_path)
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "fc1.weight" in out and "total" in out


def test_inspect_and_eval_refuse_a_damaged_file(tmp_path, capsys):
    path = _saved_nsk(tmp_path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    for argv in (["inspect", str(path)], ["eval", str(path), "--data", "digits"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("netshrink: error:") and err.count("\n") == 1


def test_eval_reports_a_compressed_file(tmp_path, capsys):
    path = _saved_nsk(tmp_path)
    assert main(["eval", str(path), "--data", "digits", "--json"]) == 0
    import json

    report = json.loads(capsys.readouterr().out)
    assert report["file_bytes"] == path.stat().st_size and 0 <= report["accuracy"] <= 1


@pytest.mark.slow
def test_demo_runs_end_to_end_on_digits(tmp_path, capsys):
    assert main(["demo", "--data", "digits", "--epochs", "2", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "model.nsk").is_file() and (tmp_path / "report.html").is_file()
    verbs = [line.split()[0].split(":")[1] for line in out.splitlines() if line[:2] in {f"{i}:" for i in range(9)}]
    # every family, one table
    assert verbs == ["baseline", "train", "low_rank", "early_exit", "magnitude_prune", "cluster"]
    assert f"HTML report: {tmp_path / 'report.html'}" in out


def test_train_then_eval_the_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--model", "lenet5", "--model-kwargs", '{"padding": 2}', "--data", "digits",
            "--epochs", "4", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    assert "test accuracy" in capsys.readouterr().out
    for name in ("model.safetensors", "checkpoint.safetensors"):
        assert main(["eval", str(out / name), "--data", "digits", "--json"]) == 0
        import json

        report = json.loads(capsys.readouterr().out)
        assert report["params"] == 431_080 - 400_500 + (50 * 2 * 2 * 500 + 500)
        assert report["accuracy"] > 0.5


def test_eval_on_data_the_model_was_not_made_for(tmp_path, capsys):
    path = _saved_nsk(tmp_path)  # an 8x8-input model
    import numpy as np

    npz = tmp_path / "big.npz"
    rng = np.random.default_rng(0)
    np.savez(npz, x_train=rng.random((20, 12, 12)), y_train=np.arange(20) % 10,
             x_test=rng.random((5, 12, 12)), y_test=np.arange(5))
    assert main(["eval", str(path), "--data", str(npz)]) == 2
    err = capsys.readouterr().err
    assert "does not accept" in err and err.count("\n") == 1


def test_train_with_an_empty_validation_split_reports_na(tmp_path, capsys):
    rng = np.random.default_rng(0)
    npz = tmp_path / "four.npz"
    np.savez(npz, x_train=rng.random((4, 8, 8)), y_train=np.array([0, 1, 0, 1]),
             x_test=rng.random((2, 8, 8)), y_test=np.array([0, 1]))
    argv = ["train", "--model", "lenet300_100", "--data", str(npz), "--epochs", "1", "--batch-size", "2",
            "--out", str(tmp_path / "run"), "--no-progress"]
    assert main(argv) == 0
    assert "val accuracy n/a" in capsys.readouterr().out
