"""Data sources: Fashion-MNIST (IDX), scikit-learn digits, user .npz files and image folders."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from netshrink.core.errors import DataError
from netshrink.data.dataset import Dataset, build_dataset
from netshrink.data.idx import read_idx

DEFAULT_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def fashion_mnist_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """``data_dir``, else ``$NETSHRINK_DATA``, else the Debian package's folder."""
    return Path(data_dir or os.environ.get("NETSHRINK_DATA") or DEFAULT_FASHION_DIR)


def load_fashion_mnist(data_dir: str | os.PathLike | None = None, **split_kw) -> Dataset:
    """Fashion-MNIST (Xiao et al. 2017) from its four IDX .gz files."""
    root = fashion_mnist_dir(data_dir)
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte")
    paths = []
    for name in names:
        candidates = [root / f"{name}.gz", root / name]
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            raise DataError(f"Fashion-MNIST not found in {root} (missing {name}.gz); install it with "
                            "'apt-get install dataset-fashion-mnist' or pass --data-dir")
        paths.append(found)
    x_train, y_train, x_test, y_test = (read_idx(p) for p in paths)
    return build_dataset("fashion-mnist", x_train, y_train, x_test, y_test, FASHION_CLASSES, **split_kw)


def load_digits(**split_kw) -> Dataset:
    """scikit-learn's 8x8 digits (1797 images): a fixed 25% test split, for fast tests."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = (bunch.images / 16.0).astype(np.float32)  # (N, 8, 8) in [0, 1]
    y = bunch.target.astype(np.int64)
    order = np.random.default_rng(1234).permutation(len(y))
    n_test = len(y) // 4
    test, train = order[:n_test], order[n_test:]
    return build_dataset("digits", x[train], y[train], x[test], y[test], **split_kw)


def load_npz(path: str | os.PathLike, **split_kw) -> Dataset:
    """A user's ``.npz`` holding ``x_train, y_train, x_test, y_test`` (no pickled objects)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in archive]
            if missing:
                raise DataError(f"{path} lacks array(s) {missing}; save x_train, y_train, x_test, "
                                "y_test with numpy.savez")
            arrays = [archive[k] for k in ("x_train", "y_train", "x_test", "y_test")]
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"cannot read {path} as .npz ({type(exc).__name__}: {exc}); save it with "
                        "numpy.savez") from None
    return build_dataset(path.stem, *arrays, **split_kw)


def _read_folder(root: Path, classes: list[str], size: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image, UnidentifiedImageError

    images, labels = [], []
    for label, cls in enumerate(classes):
        for file in sorted((root / cls).iterdir()):
            if file.suffix.lower() not in _IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(file) as img:
                    img = img.convert("L")
                    if size is not None:
                        img = img.resize(size[::-1])
                    images.append(np.asarray(img, dtype=np.uint8))
            except (UnidentifiedImageError, OSError) as exc:
                raise DataError(f"cannot read image {file}: {exc}; remove or replace it") from None
            labels.append(label)
    if not images:
        raise DataError(f"{root} holds no images; put images in one subfolder per class")
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise DataError(f"{root}: images differ in size {sorted(shapes)}; resize them to one size")
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def load_image_folder(path: str | os.PathLike, **split_kw) -> Dataset:
    """An image folder: ``train/<class>/*.png`` and ``test/<class>/*.png`` (grayscale)."""
    root = Path(path)
    train_root, test_root = root / "train", root / "test"
    if not train_root.is_dir() or not test_root.is_dir():
        raise DataError(f"{root} must hold train/ and test/ folders, each with one subfolder per class")
    classes = sorted(p.name for p in train_root.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"{train_root} has no class subfolders; make one subfolder per class")
    unknown = sorted(p.name for p in test_root.iterdir() if p.is_dir() and p.name not in classes)
    if unknown:
        raise DataError(f"{test_root} has classes {unknown} that train/ lacks; use the same class folders")
    x_train, y_train = _read_folder(train_root, classes, None)
    x_test, y_test = _read_folder(test_root, [c for c in classes if (test_root / c).is_dir()], None)
    # map test labels back to the train class order
    test_classes = [c for c in classes if (test_root / c).is_dir()]
    y_test = np.asarray([classes.index(test_classes[i]) for i in y_test], dtype=np.int64)
    return build_dataset(root.name, x_train, y_train, x_test, y_test, tuple(classes), **split_kw)


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, val_fraction: float = 0.1,
                 seed: int = 0) -> Dataset:
    """Load ``fashion-mnist``, ``digits``, a path to an ``.npz`` or an image folder."""
    split_kw = {"val_fraction": val_fraction, "seed": seed}
    if name == "fashion-mnist":
        return load_fashion_mnist(data_dir, **split_kw)
    if name == "digits":
        return load_digits(**split_kw)
    path = Path(name)
    if path.suffix == ".npz":
        if not path.is_file():
            raise DataError(f"{path} does not exist; give an existing .npz file")
        return load_npz(path, **split_kw)
    if path.is_dir():
        return load_image_folder(path, **split_kw)
    raise DataError(f"unknown data {name!r}; use fashion-mnist, digits, a .npz file or an image folder")
