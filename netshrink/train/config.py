"""``FitConfig``: everything the one training loop needs to know, validated up front."""

from __future__ import annotations

import dataclasses
import math

from netshrink.core.config import Config
from netshrink.core.errors import ConfigError

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "step", "constant")


@dataclasses.dataclass(frozen=True)
class FitConfig(Config):
    """How ``fit`` trains a model.

    Args:
        epochs: passes over the training split.
        batch_size: the GLOBAL batch size; under DDP each of ``W`` processes takes
            ``batch_size / W`` samples of every batch, so results do not depend on ``W``.
        lr: peak learning rate (after warm-up).
        optimizer: ``"sgd"`` (with ``momentum``), ``"adam"`` or ``"adamw"`` (``momentum`` unused).
        momentum: SGD momentum.
        weight_decay: L2 penalty (SGD, Adam) or decoupled decay (AdamW), on every parameter.
        schedule: per-step ``"cosine"`` decay to zero, ``"step"`` (x0.1 at 50% and 75% of the
            epochs) or ``"constant"``.
        warmup_epochs: linear warm-up from ``lr / warmup_steps`` to ``lr`` over these epochs.
        label_smoothing: for the default cross-entropy loss.
        augment: random 2-pixel crop and horizontal flip of every training batch.
        seed: seeds the batch order, the augmentation and the global RNG (dropout).
        eval_every: evaluate on the validation split every this many epochs (and always last).
        checkpoint_every_steps: also checkpoint every this many optimizer steps (counted over
            the whole run), for epochs too long to lose; ``0`` checkpoints at epoch ends only.
            A resumed run continues from the middle of the epoch with exactly the weights of an
            uninterrupted one. Changing it does not change training, so a run may be resumed
            with another value.
        deterministic: switch on ``torch.use_deterministic_algorithms`` (and, on CUDA, cuBLAS's
            fixed workspace and no cuDNN autotuning) for the run and restore the caller's
            settings afterwards. Bit-exact resume needs it wherever the default kernels are not
            deterministic (many CUDA kernels accumulate in a varying order); on one CPU thread
            they are, so it is off by default. It can make CUDA training slower.

    Example:
        >>> FitConfig(epochs=30, lr=0.1, augment=True).to_dict()["epochs"]
        30
    """

    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.05
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    warmup_epochs: int = 0
    label_smoothing: float = 0.0
    augment: bool = False
    seed: int = 0
    eval_every: int = 1
    checkpoint_every_steps: int = 0
    deterministic: bool = False

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "warmup_epochs", "seed", "eval_every", "checkpoint_every_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"FitConfig.{name} must be an integer, got {value!r}")
        for name in ("lr", "momentum", "weight_decay", "label_smoothing"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ConfigError(f"FitConfig.{name} must be a finite number, got {value!r}")
        for name in ("augment", "deterministic"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"FitConfig.{name} must be true or false, got {getattr(self, name)!r}")
        if self.epochs < 1:
            raise ConfigError(f"FitConfig.epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"FitConfig.batch_size must be at least 1, got {self.batch_size}")
        if self.lr <= 0:
            raise ConfigError(f"FitConfig.lr must be positive, got {self.lr}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; choose one of {list(OPTIMIZERS)}")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"FitConfig.momentum must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            raise ConfigError(f"FitConfig.weight_decay must be >= 0, got {self.weight_decay}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"unknown schedule {self.schedule!r}; choose one of {list(SCHEDULES)}")
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise ConfigError(f"FitConfig.warmup_epochs must be in [0, epochs={self.epochs}], "
                              f"got {self.warmup_epochs}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"FitConfig.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.seed < 0:
            raise ConfigError(f"FitConfig.seed must be >= 0, got {self.seed}")
        if self.eval_every < 1:
            raise ConfigError(f"FitConfig.eval_every must be at least 1, got {self.eval_every}")
        if self.checkpoint_every_steps < 0:
            raise ConfigError(f"FitConfig.checkpoint_every_steps must be >= 0 (0: at epoch ends only), "
                              f"got {self.checkpoint_every_steps}")

    def trains_like(self, other: FitConfig) -> bool:
        """Whether ``other`` trains the same weights: equal in every field but
        ``checkpoint_every_steps`` (resume compares configs with this)."""
        return dataclasses.replace(self, checkpoint_every_steps=other.checkpoint_every_steps) == other
