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


#: the losses each output can be matched by (the first is the default)
RECOVER_LOSSES = {"logits": ("kl", "mse"), "hidden": ("cosine", "mse"), "embedding": ("cosine", "mse")}


@dataclasses.dataclass(frozen=True)
class Recover(Config):
    """Recovery without labels: the compressed model (student) matches the original (teacher) on
    unlabeled inputs (``netshrink.distillation.recover``).

    Args:
        match: which outputs are matched:
            - ``"logits"``: the final logits (a ``ModelOutput``'s ``logits``), by KL divergence at
              temperature ``T`` scaled by ``T^2`` (Hinton, Vinyals & Dean 2015, sec. 2), per token
              for a language model;
            - ``"hidden"``: the last hidden state (a Hugging Face model's base model output, else
              the model's own output), per token, or the outputs of the modules named in ``layers``;
            - ``"embedding"``: the last hidden state mean-pooled over the attention mask, the
              sentence embedding of sentence-transformers (Reimers & Gurevych 2019, sec. 3).
        loss: ``"kl"`` (logits only), ``"mse"`` or ``"cosine"`` (1 - cosine similarity; hidden
            states and embeddings); None takes the first of ``RECOVER_LOSSES[match]``.
        T: the softmax temperature of the KL term (> 0).
        layers: module paths (as ``named_modules`` names them) present in both models, whose
            outputs are matched instead of the last hidden state (``match="hidden"`` only); the
            losses of the layers are averaged.
        train_mode: False (the default) trains the student in eval mode: no dropout and
            BatchNorm's running statistics, so it learns to match the teacher as both will run
            (dropout noise would be matched too); True keeps ``fit``'s train mode.

    Example:
        >>> Recover(match="embedding").resolved_loss
        'cosine'
    """

    match: str = "logits"
    loss: str | None = None
    T: float = 1.0
    layers: tuple[str, ...] = ()
    train_mode: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.train_mode, bool):
            raise ConfigError(f"Recover.train_mode must be true or false, got {self.train_mode!r}")
        if self.match not in RECOVER_LOSSES:
            raise ConfigError(f"Recover.match must be one of {sorted(RECOVER_LOSSES)}, got {self.match!r}")
        allowed = RECOVER_LOSSES[self.match]
        if self.loss is not None and self.loss not in allowed:
            raise ConfigError(f"match={self.match!r} is matched by loss {' or '.join(map(repr, allowed))}, "
                              f"not {self.loss!r}")
        if not isinstance(self.T, (int, float)) or isinstance(self.T, bool) or not math.isfinite(self.T) \
                or self.T <= 0:
            raise ConfigError(f"temperature T must be a positive number, got {self.T!r}")
        if not isinstance(self.layers, tuple) or not all(isinstance(p, str) and p for p in self.layers):
            raise ConfigError(f"Recover.layers must be a tuple of module paths, got {self.layers!r}")
        if self.layers and self.match != "hidden":
            raise ConfigError(f"layers name hidden states to match; use match='hidden', not {self.match!r}")

    @property
    def resolved_loss(self) -> str:
        """The loss used: ``loss``, or the default of ``match``."""
        return self.loss or RECOVER_LOSSES[self.match][0]
