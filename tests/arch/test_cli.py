"""``netshrink convert``: real files, fine-tuning from the original, one-line refusals."""

import pytest
import torch
from torch import nn

import netshrink
from netshrink.cli import main
from netshrink.core import get_log
from netshrink.train import save_model
from tests.models import TINY_MODELS


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "convnet.safetensors"
    save_model(path, TINY_MODELS["convnet"]())
    return path


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_convert_to_separable_writes_a_loadable_file(checkpoint, tmp_path, capsys):
    code, out, _ = run(["convert", checkpoint, "--to", "separable", "--data", "digits", "--out", tmp_path / "s"],
                       capsys)
    assert code == 0
    model = netshrink.load(tmp_path / "s" / "model.nsk")
    assert isinstance(model.features[1][0].depthwise, nn.Conv2d) and model.features[1][0].depthwise.groups == 8
    assert get_log(model)[-1]["verb"] == "separable"
    assert "features.0.0" in out and "already depthwise" in out and "test accuracy" in out


@pytest.mark.slow
def test_convert_to_low_rank_fine_tunes_from_the_original(checkpoint, tmp_path, capsys):
    code, out, _ = run(["convert", checkpoint, "--to", "low-rank", "--param-ratio", "0.5", "--conv", "spatial",
                        "--epochs", "1", "--data", "digits", "--out", tmp_path / "r"], capsys)
    assert code == 0 and "after distill" in out
    model = netshrink.load(tmp_path / "r" / "model.nsk")
    assert model.features[3][0].vertical.kernel_size == (3, 1)
    assert [r["verb"] for r in get_log(model)] == ["low_rank"]


@pytest.mark.parametrize("options,message", [
    (["--to", "low-rank", "--energy", "1.5"], "energy must be in (0, 1], got 1.5"),
    (["--to", "low-rank", "--energy", "0"], "energy must be in (0, 1], got 0.0"),
    (["--to", "low-rank", "--rank", "10000"], "rank 10000 is larger than this layer allows"),
    (["--to", "low-rank", "--rank", "2", "--layers", "features.9"], "unknown layer name(s) ['features.9']"),
    (["--to", "separable", "--rank", "9", "--layers", "features.1.0"], "multiplier 9 is larger than this layer allows"),
    (["--to", "separable", "--energy", "0.5"], "--energy and --param-ratio apply to --to low-rank"),
    (["--to", "low-rank"], "--to low-rank needs exactly one of --rank, --energy, --param-ratio"),
    (["--to", "low-rank", "--rank", "2", "--epochs", "-1"], "--epochs must be 0 (no fine-tuning) or more, got -1"),
])
def test_bad_input_is_one_line_and_writes_nothing(checkpoint, tmp_path, capsys, options, message):
    code, _, err = run(["convert", checkpoint, *options, "--data", "digits", "--out", tmp_path / "bad"], capsys)
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "bad").exists()
