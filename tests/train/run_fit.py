"""Runs ``fit`` on digits in its own process, for the kill/resume and distributed tests.

    python tests/train/run_fit.py OUT_DIR --model convnet --epochs 8 --batch-size 16 --augment

The repository root must be on PYTHONPATH. The model is built with ``torch.manual_seed(0)`` from
``tests/models.py``, like the in-process reference runs of the tests. ``--source dataset`` trains
on the same samples as torch ``TensorDataset``s (the DataLoader path, validation included);
``--crash-at-step N`` raises in step N (1-based, after its optimizer step); ``--rank-state`` also
writes the model this rank's ``fit`` returned to ``OUT_DIR/rank<r>.safetensors``;
``--nan-loss-on-rank R`` adds NaN to rank R's loss (not to its gradients), so only that rank sees a
diverged loss.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from netshrink.data import load_digits
from netshrink.train import Callback, FitConfig, fit, save_model
from netshrink.train.fit import cross_entropy
from tests.models import TINY_MODELS


class Crash(Exception):
    pass


class CrashAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, model, info):
        if info.step + 1 == self.step:
            raise Crash(f"crash at step {self.step}")


def config_from_args(args: argparse.Namespace) -> FitConfig:
    return FitConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                     augment=args.augment, seed=args.seed, checkpoint_every_steps=args.checkpoint_every_steps)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir")
    parser.add_argument("--model", default="convnet", choices=sorted(TINY_MODELS))
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--augment", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint-every-steps", type=int, default=0)
    parser.add_argument("--source", choices=["tensors", "dataset"], default="tensors")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--crash-at-step", type=int, default=0)
    parser.add_argument("--rank-state", action="store_true")
    parser.add_argument("--nan-loss-on-rank", type=int, default=-1)
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(0)
    model = TINY_MODELS[args.model]()
    digits = load_digits()
    data = {"data": digits} if args.source == "tensors" else {
        "data": TensorDataset(digits.train.x, digits.train.y), "val": TensorDataset(digits.val.x, digits.val.y)}
    rank = int(os.environ.get("RANK", "0"))
    base = cross_entropy()

    def loss_fn(logits, x, y):
        return base(logits, x, y) + (float("nan") if rank == args.nan_loss_on_rank else 0.0)

    callbacks = [CrashAt(args.crash_at_step)] if args.crash_at_step else []
    result = fit(model, **data, config=config_from_args(args), loss_fn=loss_fn, out_dir=args.out_dir,
                 resume=args.resume, progress=False, callbacks=callbacks)
    if args.rank_state:
        save_model(Path(args.out_dir) / f"rank{rank}.safetensors", result.model)


if __name__ == "__main__":
    main()
