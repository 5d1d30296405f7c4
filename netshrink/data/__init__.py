"""Data: Fashion-MNIST, digits, user .npz and image folders, with a deterministic validation split;
unlabeled inputs and text (tokenized by the model's tokenizer) for calibration and recovery."""

from netshrink.data.augment import random_crop_flip
from netshrink.data.dataset import Dataset, Split, build_dataset
from netshrink.data.sources import load_dataset, load_digits, load_fashion_mnist
from netshrink.data.text import read_text
from netshrink.data.unlabeled import UnlabeledInputs

__all__ = ["Dataset", "Split", "UnlabeledInputs", "build_dataset", "load_dataset", "load_digits",
           "load_fashion_mnist", "random_crop_flip", "read_text"]
