"""Every zoo model trains on every built-in data set through the real command, or is refused up
front in one line naming the smallest input it accepts."""

import gzip

import numpy as np
import pytest

from netshrink.cli import main
from netshrink.models import list_models

BUILT_IN_DATA = ("digits", "fashion-mnist")  # the names load_dataset knows without a path


@pytest.fixture(scope="module")
def fashion_shaped_dir(tmp_path_factory):
    """A few random 28x28 images in Fashion-MNIST's IDX files: its shape and reader, not its cost."""
    root = tmp_path_factory.mktemp("fashion")
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (40, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(40, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.arange(10, dtype=np.uint8),
    }
    for name, array in arrays.items():
        header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
        with gzip.open(root / f"{name}.gz", "wb") as handle:
            handle.write(header + array.tobytes())
    return root


@pytest.mark.parametrize("data", BUILT_IN_DATA)
@pytest.mark.parametrize("model", list_models())
def test_every_zoo_model_trains_on_every_built_in_data_set(model, data, fashion_shaped_dir, tmp_path, capsys):
    argv = ["train", "--model", model, "--data", data, "--epochs", "1", "--batch-size", "256",
            "--out", str(tmp_path / "run"), "--no-progress"]
    if data == "fashion-mnist":
        argv += ["--data-dir", str(fashion_shaped_dir)]
    assert main(argv) == 0, capsys.readouterr().err
    assert "test accuracy" in capsys.readouterr().out
    assert (tmp_path / "run" / "model.safetensors").is_file()


@pytest.mark.parametrize("model,smallest", [("lenet5", "4x4"), ("convnet", "8x8")])
def test_too_small_inputs_are_refused_before_training(model, smallest, tmp_path, capsys):
    rng = np.random.default_rng(0)
    npz = tmp_path / "tiny.npz"
    np.savez(npz, x_train=rng.random((20, 3, 3)), y_train=np.arange(20) % 2,
             x_test=rng.random((4, 3, 3)), y_test=np.arange(4) % 2)
    run = tmp_path / "run"
    assert main(["train", "--model", model, "--data", str(npz), "--out", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("netshrink: error:") and err.count("\n") == 1
    assert f"needs inputs of at least {smallest}, got 3x3" in err
    assert not run.exists()
