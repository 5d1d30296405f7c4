"""`netshrink auto`: a search from the command line, and one line naming the flag for bad input."""

import pytest

from netshrink.cli import main

SMALL = ["--epochs", "1", "--cluster-epochs", "1", "--batch-size", "256", "--sparsities", "0,0.5,0.8",
         "--cluster-bits", "2,4,8", "--int-bits", "4", "--calibration-samples", "128"]


@pytest.fixture
def checkpoint(checkpoint_file):
    return checkpoint_file


def _auto(checkpoint, out, *flags):
    return main(["auto", str(checkpoint), "--data", "digits", "--builder", "tests.models:UserMLP", "--out", str(out),
                 *SMALL, *flags])


@pytest.mark.slow
def test_a_search_from_the_command_line(checkpoint, tmp_path, capsys):
    assert _auto(checkpoint, tmp_path, "--max-bytes", "6x", "--max-drop", "2", "--time", "10m", "--points", "2") == 0
    printed = capsys.readouterr().out
    assert "chosen: point" in printed and "2 point(s)" in printed
    for name in ("model.nsk", "recipe.toml", "report.html", "result.json", "original.nsk"):
        assert (tmp_path / name).is_file()
    assert main(["run", str(tmp_path / "recipe.toml"), "--out", str(tmp_path / "check"), "--check"]) == 0


@pytest.mark.parametrize(("flags", "message"), [
    (["--max-bytes", "abc"], "--max-bytes 'abc' is not a size"),
    (["--max-drop", "1"], "give exactly one of --max-bytes, --max-latency-ms, --max-macs"),
    (["--max-bytes", "6x", "--time", "soon"], "--time 'soon' is not a duration"),
    (["--max-bytes", "6x", "--sparsities", "0.5,1.2"], "--sparsities must be a number in [0, 1)"),
    (["--max-bytes", "6x", "--cluster-bits", "2,9"], "--cluster-bits are integers from 2 to 8"),
    (["--max-bytes", "6x", "--int-bits", "four"], "--int-bits 'four': give comma-separated ints"),
    (["--max-bytes", "6x", "--points", "0"], "--points must be at least 1"),
    (["--max-bytes", "6x", "--epochs", "-1"], "--epochs must be an integer >= 0"),
    (["--max-bytes", "100"], "--max-bytes of 100 bytes is impossible"),
    (["--max-bytes", "6x", "--time", "0.01s"], "--time 0.01 s is too short"),
    (["--max-bytes", "6x", "--runtime", "onnxruntime"], "it applies to --max-latency-ms, not --max-bytes"),
])
def test_bad_input_is_one_line_naming_the_flag(checkpoint, tmp_path, capsys, flags, message):
    assert _auto(checkpoint, tmp_path / "out", *flags) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("netshrink: error: ") and message in err and "\n" not in err
    assert not (tmp_path / "out").exists()
