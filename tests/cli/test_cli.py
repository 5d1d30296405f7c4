import subprocess
import sys

import numpy as np
import pytest

from netshrink.cli import build_parser, main

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
    out = capsys.readouterr().out
    assert "lenet300_100" in out and "convnet" in out


@pytest.mark.parametrize("argv,message", [
    (["eval", "missing.nsk", "--data", "digits"], "does not exist"),
    (["train", "--model", "nope", "--out", "x"], "unknown model"),
    (["train", "--model", "lenet5", "--data", "imagenet", "--out", "x"], "unknown data"),
    (["train", "--model", "lenet5", "--model-kwargs", "{bad", "--data", "digits", "--out", "x"],
     "not valid JSON"),
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
