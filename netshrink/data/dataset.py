"""The in-memory data set every netshrink stage works on, with validation of user input.

All sources (Fashion-MNIST, digits, .npz, image folders) become a ``Dataset``: float32 images
(N, C, H, W) standardised with the training set's mean and std, int64 labels, and a deterministic
validation split carved from the training set. Compression decisions (thresholds, ranks, bits)
are tuned on ``val``; ``test`` is only for the final report.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from netshrink.core.errors import DataError


@dataclasses.dataclass(frozen=True)
class Split:
    """Images ``x`` (N, C, H, W) float32 and labels ``y`` (N,) int64."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclasses.dataclass(frozen=True)
class Dataset:
    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    classes: tuple[str, ...]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.x.shape[1:])  # type: ignore[return-value]


def check_arrays(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                 y_test: np.ndarray, source: str) -> None:
    """Raise ``DataError`` with a one-line reason when user arrays are unusable."""
    for name, x in (("x_train", x_train), ("x_test", x_test)):
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise DataError(f"{source}: {name} has dtype {x.dtype}; give numeric images (uint8 or float)")
        if x.ndim not in (2, 3, 4):
            raise DataError(f"{source}: {name} has shape {x.shape}; expected (N, H, W), (N, C, H, W) or (N, F)")
        if x.shape[0] == 0:
            raise DataError(f"{source}: {name} is empty; give at least one sample")
        if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
            raise DataError(f"{source}: {name} holds NaN or infinite values; clean the data first")
    for name, y, x in (("y_train", y_train, x_train), ("y_test", y_test, x_test)):
        if not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{source}: {name} has dtype {y.dtype}; labels must be integers 0..K-1")
        if y.ndim != 1 or y.shape[0] != x.shape[0]:
            raise DataError(f"{source}: {name} has shape {y.shape} but there are {x.shape[0]} images; "
                            "give one label per image")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(f"{source}: train images {x_train.shape[1:]} and test images "
                        f"{x_test.shape[1:]} differ in shape; make them the same")
    if y_train.min() < 0 or y_test.min() < 0:
        raise DataError(f"{source}: negative labels; labels must be integers 0..K-1")
    num_classes = int(y_train.max()) + 1
    if y_test.max() >= num_classes:
        raise DataError(f"{source}: test label {int(y_test.max())} is out of range; the training "
                        f"labels only go up to {num_classes - 1}")


def _as_nchw(x: np.ndarray) -> np.ndarray:
    if x.ndim == 2:  # (N, F) feature vectors -> (N, 1, 1, F)
        return x[:, None, None, :]
    if x.ndim == 3:  # (N, H, W) -> (N, 1, H, W)
        return x[:, None]
    return x


def build_dataset(name: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                  y_test: np.ndarray, classes: tuple[str, ...] | None = None,
                  val_fraction: float = 0.1, seed: int = 0) -> Dataset:
    """Validate, standardise and split arrays into a ``Dataset``.

    The validation split is a seeded permutation of the training set, stratified by nothing but
    deterministic: the same arrays and seed always give the same split. Scaling statistics come
    from the remaining training part only.
    """
    check_arrays(x_train, y_train, x_test, y_test, name)
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    x_train = _as_nchw(x_train).astype(np.float32)
    x_test = _as_nchw(x_test).astype(np.float32)
    order = np.random.default_rng(seed).permutation(len(y_train))
    n_val = int(round(len(order) * val_fraction))
    if len(order) - n_val < 1:
        raise DataError(f"{name}: too few training samples ({len(order)}) to carve a validation split")
    val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
    mean, std = float(x_train[train_idx].mean()), float(x_train[train_idx].std()) or 1.0
    num_classes = int(max(y_train.max(), y_test.max())) + 1

    def split(x: np.ndarray, y: np.ndarray) -> Split:
        return Split(torch.from_numpy(((x - mean) / std).astype(np.float32)),
                     torch.from_numpy(y.astype(np.int64)))

    return Dataset(
        name=name,
        train=split(x_train[train_idx], y_train[train_idx]),
        val=split(x_train[val_idx], y_train[val_idx]),
        test=split(x_test, y_test),
        num_classes=num_classes,
        classes=tuple(classes) if classes else tuple(str(i) for i in range(num_classes)),
    )
