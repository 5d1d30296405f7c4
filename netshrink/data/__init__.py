"""Data: Fashion-MNIST, digits, user .npz and image folders, with a deterministic validation split."""

from netshrink.data.augment import random_crop_flip
from netshrink.data.dataset import Dataset, Split, build_dataset
from netshrink.data.sources import load_dataset, load_digits, load_fashion_mnist

__all__ = ["Dataset", "Split", "build_dataset", "load_dataset", "load_digits", "load_fashion_mnist",
           "random_crop_flip"]
