"""What ``fit`` shows while it trains: a tqdm bar on a terminal, one line per epoch in a log.

A bar redraws itself with carriage returns, which fill a log file with hundreds of partial lines,
so the bar is drawn only when its stream (stderr) is a terminal; otherwise each epoch prints one
line when it ends.
"""

from __future__ import annotations

import sys
from typing import Any


class Progress:
    """Progress of one rank (``enabled`` False on the others: they show nothing)."""

    def __init__(self, enabled: bool, epochs: int) -> None:
        self.enabled, self.epochs = enabled, epochs
        self.bar: Any = None

    def start_epoch(self, epoch: int, steps: int, done: int) -> None:
        """Epoch ``epoch`` of ``steps`` steps begins (at step ``done`` when resumed mid-epoch)."""
        if self.enabled and sys.stderr.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=steps, initial=done, desc=f"epoch {epoch}/{self.epochs}", unit="batch",
                            leave=True, file=sys.stderr)

    def step(self, step: int, loss: float, acc: float | None, samples_s: float) -> None:
        """Steps up to ``step`` are done; running mean loss and accuracy of the epoch."""
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            shown = {"acc": f"{acc:.4f}"} if acc is not None else {}
            self.bar.set_postfix(loss=f"{loss:.4f}", **shown, samples_s=f"{samples_s:.0f}")

    def end_epoch(self, row: dict[str, Any]) -> None:
        """The epoch's history row (after evaluation): closes the bar, or prints the epoch's line."""
        if self.bar is not None:
            if row["val_acc"] is not None:
                self.bar.set_postfix(loss=f"{row['train_loss']:.4f}", acc=_number(row["train_acc"]),
                                     val_acc=f"{row['val_acc']:.4f}")
            self.bar.close()
            self.bar = None
        elif self.enabled:
            print(f"epoch {row['epoch']}/{self.epochs}  loss {row['train_loss']:.4f}  acc {_number(row['train_acc'])}  "
                  f"val_acc {_number(row['val_acc'])}  lr {row['lr']:.3g}  samples_s {row['samples_per_s']:.0f}  "
                  f"{row['seconds']:.1f}s", file=sys.stderr, flush=True)


def _number(value: float | None) -> str:
    """A rate to 4 places, or ``-`` when there is none (unlabeled data, no evaluation)."""
    return f"{value:.4f}" if value is not None else "-"
