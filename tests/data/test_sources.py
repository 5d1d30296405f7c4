import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from netshrink.core.errors import DataError
from netshrink.data import load_dataset
from netshrink.data.idx import read_idx
from netshrink.data.sources import DEFAULT_FASHION_DIR


def _npz(path: Path, **overrides) -> Path:
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (40, 6, 6), dtype=np.uint8),
        "y_train": rng.integers(0, 3, 40),
        "x_test": rng.integers(0, 256, (10, 6, 6), dtype=np.uint8),
        "y_test": rng.integers(0, 3, 10),
    }
    arrays.update(overrides)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)
    return path


def test_digits_split_is_deterministic_and_disjoint(digits):
    again = load_dataset("digits")
    assert torch.equal(digits.val.x, again.val.x) and torch.equal(digits.train.y, again.train.y)
    assert len(digits.train) + len(digits.val) == 1348 and len(digits.test) == 449
    other_seed = load_dataset("digits", seed=1)
    assert not torch.equal(digits.val.y, other_seed.val.y)
    train_rows = {tuple(r) for r in digits.train.x.flatten(1).tolist()}
    assert sum(tuple(r) in train_rows for r in digits.val.x.flatten(1).tolist()) < len(digits.val) // 10


def test_standardised_with_training_statistics(digits):
    assert abs(float(digits.train.x.mean())) < 1e-4
    assert abs(float(digits.train.x.std()) - 1.0) < 1e-2
    assert digits.input_shape == (1, 8, 8) and digits.num_classes == 10


@pytest.mark.skipif(not (DEFAULT_FASHION_DIR / "train-images-idx3-ubyte.gz").exists(),
                    reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_from_debian_package():
    data = load_dataset("fashion-mnist")
    assert len(data.train) == 54000 and len(data.val) == 6000 and len(data.test) == 10000
    assert data.input_shape == (1, 28, 28) and data.classes[9] == "Ankle boot"
    assert sorted(data.test.y.unique().tolist()) == list(range(10))


def test_fashion_mnist_missing_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("NETSHRINK_DATA", str(tmp_path))
    with pytest.raises(DataError, match="dataset-fashion-mnist"):
        load_dataset("fashion-mnist")


def test_fashion_mnist_data_dir_override(tmp_path):
    rng = np.random.default_rng(0)

    def write(name, array, magic):
        header = bytes([0, 0, magic, array.ndim]) + b"".join(
            d.to_bytes(4, "big") for d in array.shape)
        with gzip.open(tmp_path / f"{name}.gz", "wb") as f:
            f.write(header + array.tobytes())

    write("train-images-idx3-ubyte", rng.integers(0, 255, (30, 28, 28), dtype=np.uint8), 8)
    write("train-labels-idx1-ubyte", np.arange(30, dtype=np.uint8) % 10, 8)
    write("t10k-images-idx3-ubyte", rng.integers(0, 255, (10, 28, 28), dtype=np.uint8), 8)
    write("t10k-labels-idx1-ubyte", np.arange(10, dtype=np.uint8), 8)
    data = load_dataset("fashion-mnist", data_dir=tmp_path)
    assert len(data.train) + len(data.val) == 30 and len(data.test) == 10


def test_idx_rejects_truncated_and_bad_magic(tmp_path):
    good = bytes([0, 0, 8, 1]) + (5).to_bytes(4, "big") + bytes(5)
    (tmp_path / "ok").write_bytes(good)
    assert read_idx(tmp_path / "ok").tolist() == [0] * 5
    (tmp_path / "short").write_bytes(good[:-1])
    with pytest.raises(DataError, match="declares"):
        read_idx(tmp_path / "short")
    (tmp_path / "magic").write_bytes(b"\x01" + good[1:])
    with pytest.raises(DataError, match="magic"):
        read_idx(tmp_path / "magic")


def test_npz_loads(tmp_path):
    data = load_dataset(str(_npz(tmp_path / "ok.npz")))
    assert data.input_shape == (1, 6, 6) and data.num_classes == 3
    assert len(data.train) + len(data.val) == 40


@pytest.mark.parametrize("overrides,message", [
    ({"y_test": None}, "lacks"),
    ({"x_train": np.array(["a"] * 40)}, "dtype"),
    ({"y_train": np.zeros(39, dtype=np.int64)}, "one label per image"),
    ({"y_train": np.full(40, 0.5)}, "integers"),
    ({"y_test": np.full(10, 7)}, "out of range"),
    ({"y_train": np.full(40, -1)}, "negative"),
    ({"x_test": np.zeros((10, 5, 5), dtype=np.uint8)}, "differ in shape"),
    ({"x_train": np.zeros((0, 6, 6), dtype=np.uint8), "y_train": np.zeros(0, dtype=np.int64)}, "empty"),
    ({"x_train": np.full((40, 6, 6), np.nan)}, "NaN"),
])
def test_npz_bad_input_is_one_clear_error(tmp_path, overrides, message):
    path = _npz(tmp_path / "bad.npz", **overrides)
    with pytest.raises(DataError, match=message) as info:
        load_dataset(str(path))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("content", [b"not a zip file", b"PK\x03\x04truncated zip"])
def test_npz_not_an_archive(tmp_path, content):
    path = tmp_path / "junk.npz"
    path.write_bytes(content)
    with pytest.raises(DataError, match="cannot read"):
        load_dataset(str(path))


def test_idx_header_whose_size_overflows_64_bits(tmp_path):
    # four dimensions of 2**16 multiply to 2**64, which a 64-bit product wraps to 0 = "no data"
    header = bytes([0, 0, 8, 4]) + b"".join((2**16).to_bytes(4, "big") for _ in range(4))
    (tmp_path / "huge").write_bytes(header)
    with pytest.raises(DataError, match="declares"):
        read_idx(tmp_path / "huge")


def _image_folder(root: Path, classes=("cat", "dog"), test_classes=None, size=(6, 6)) -> Path:
    rng = np.random.default_rng(0)
    for split, names in (("train", classes), ("test", test_classes or classes)):
        for cls in names:
            (root / split / cls).mkdir(parents=True)
            for i in range(4):
                Image.fromarray(rng.integers(0, 255, size, dtype=np.uint8)).save(root / split / cls / f"{i}.png")
    return root


def test_image_folder_loads_with_class_names(tmp_path):
    data = load_dataset(str(_image_folder(tmp_path / "imgs")), val_fraction=0.25)
    assert data.classes == ("cat", "dog") and data.input_shape == (1, 6, 6)
    assert len(data.train) == 6 and len(data.val) == 2 and len(data.test) == 8


def test_image_folder_test_subset_keeps_label_order(tmp_path):
    data = load_dataset(str(_image_folder(tmp_path / "imgs", ("a", "b", "c"), ("c",))))
    assert set(data.test.y.tolist()) == {2}


def test_image_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="train/ and test/"):
        load_dataset(str(tmp_path / "empty"))
    root = _image_folder(tmp_path / "mixed")
    Image.fromarray(np.zeros((7, 7), dtype=np.uint8)).save(root / "train" / "cat" / "big.png")
    with pytest.raises(DataError, match="differ in size"):
        load_dataset(str(root))
    root = _image_folder(tmp_path / "unknown", ("a",), ("b",))
    with pytest.raises(DataError, match="train/ lacks"):
        load_dataset(str(root))
    root = _image_folder(tmp_path / "broken")
    (root / "train" / "cat" / "x.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot read image"):
        load_dataset(str(root))


def test_unknown_data_name():
    with pytest.raises(DataError, match="unknown data"):
        load_dataset("imagenet")
