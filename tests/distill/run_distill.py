"""Runs ``distill`` on digits in its own process, for the kill/resume and torchrun tests.

    python tests/distill/run_distill.py OUT_DIR TEACHER.safetensors --epochs 8 [--cache] [--model lenet5]

The repository root must be on PYTHONPATH. The student (from ``tests/models.py``) is built with
``torch.manual_seed(0)``, like the in-process reference runs of the tests.
"""

from __future__ import annotations

import argparse

import torch

from netshrink.data import load_digits
from netshrink.distillation import Distill, distill
from netshrink.train import FitConfig, load_model
from tests.models import TINY_MODELS


def configs(args: argparse.Namespace) -> tuple[Distill, FitConfig]:
    return Distill(T=4.0, alpha=0.9, cache_teacher=args.cache), FitConfig(epochs=args.epochs,
                                                                               batch_size=args.batch_size)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir")
    parser.add_argument("teacher")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--cache", action="store_true")
    parser.add_argument("--model", default="lenet5", choices=sorted(TINY_MODELS))
    parser.add_argument("--batch-size", type=int, default=16)
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(0)
    student = TINY_MODELS[args.model]()
    distill(student, load_model(args.teacher), load_digits(), *configs(args), out_dir=args.out_dir, progress=False)


if __name__ == "__main__":
    main()
