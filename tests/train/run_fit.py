"""Runs ``fit`` on digits in its own process, for the kill/resume and torchrun tests.

    python tests/train/run_fit.py OUT_DIR --model convnet --epochs 8 --batch-size 16 --augment

The repository root must be on PYTHONPATH. The model is built with ``torch.manual_seed(0)`` from
``tests/models.py``, like the in-process reference runs of the tests.
"""

from __future__ import annotations

import argparse

import torch

from netshrink.data import load_digits
from netshrink.train import FitConfig, fit
from tests.models import TINY_MODELS


def config_from_args(args: argparse.Namespace) -> FitConfig:
    return FitConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                     augment=args.augment, seed=args.seed)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir")
    parser.add_argument("--model", default="convnet", choices=sorted(TINY_MODELS))
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--augment", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(0)
    model = TINY_MODELS[args.model]()
    fit(model, load_digits(), config_from_args(args), out_dir=args.out_dir, progress=False)


if __name__ == "__main__":
    main()
