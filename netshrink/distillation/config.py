"""``Distill``: how a student learns from its teacher(s), validated up front."""

from __future__ import annotations

import dataclasses
import math

from netshrink.core.config import Config
from netshrink.core.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Distill(Config):
    """Knowledge distillation options (Hinton, Vinyals & Dean 2015; hints: Romero et al. 2015).

    Args:
        T: softmax temperature of teacher and student in the soft-target term (> 0). Higher T
            exposes more of the teacher's "dark knowledge", the ratios of its small probabilities.
        alpha: weight of the soft-target term, in [0, 1]; ``1 - alpha`` weighs the hard-label
            cross-entropy. ``alpha = 1`` trains on the teacher's soft labels alone: the student
            then follows the teacher even where the teacher is wrong.
        cache_teacher: compute the teacher's logits once over the training split, store them
            beside the run (``teacher_logits.safetensors``) and reuse them, instead of running the
            teacher at every step. Valid only without augmentation (the teacher must see each
            augmented batch), so ``distill`` refuses the combination.
        omit_classes: classes left out of the transfer set (Hinton et al. 2015, sec. 3); the
            student learns them from the soft targets of other classes' images alone. See
            ``choose_class_bias`` for the bias adjustment that follows.
        hint: ``(student_layer, teacher_layer)`` module paths (as ``named_modules`` names them):
            FitNets hint training, the student layer's output regressed through a learned
            projection onto the teacher layer's output.
        hint_weight: weight of the hint's mean squared error in the loss.

    Example:
        >>> Distill(T=4.0, alpha=0.9, omit_classes=(3,)).to_dict()["omit_classes"]
        [3]
    """

    T: float = 4.0
    alpha: float = 0.9
    cache_teacher: bool = False
    omit_classes: tuple[int, ...] = ()
    hint: tuple[str, str] | None = None
    hint_weight: float = 1.0

    def __post_init__(self) -> None:
        for name in ("T", "alpha", "hint_weight"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ConfigError(f"Distill.{name} must be a finite number, got {value!r}")
        if self.T <= 0:
            raise ConfigError(f"temperature T must be positive, got {self.T}; use e.g. T=4")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"alpha must be in [0, 1] (the weight of the soft-target loss), got {self.alpha}")
        if self.hint_weight < 0:
            raise ConfigError(f"Distill.hint_weight must be >= 0, got {self.hint_weight}")
        if not isinstance(self.cache_teacher, bool):
            raise ConfigError(f"Distill.cache_teacher must be true or false, got {self.cache_teacher!r}")
        if not isinstance(self.omit_classes, tuple) or not all(
                isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in self.omit_classes):
            raise ConfigError(f"Distill.omit_classes must be a tuple of class indices >= 0, got {self.omit_classes!r}")
        if self.hint is not None and (not isinstance(self.hint, tuple) or len(self.hint) != 2
                                      or not all(isinstance(p, str) for p in self.hint)):
            raise ConfigError(f"Distill.hint must be (student_layer, teacher_layer) module paths, got {self.hint!r}")
