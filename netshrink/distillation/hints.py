"""FitNets hints (Romero et al. 2015, sec. 2.2): a student layer regressed onto a teacher layer.

Both layers are named by module path and read with forward hooks, so neither model is edited.
The regressor is a learned projection from the student layer's output to the teacher layer's:
a 1x1 convolution for feature maps (the paper uses a convolutional regressor to keep the
parameter count small), adaptive average pooling when the spatial sizes differ, and a linear map
for anything else (flattened). ``HintedStudent`` holds the student and the projection, so
``fit``'s optimizer trains both and its checkpoints hold both (exact resume); its forward
returns the student's logits unchanged.

The paper trains the hint first and distils afterwards (two stages); here the hint's squared
error is added to the distillation loss with ``Distill.hint_weight``, one stage, so it runs in
the one ``fit`` loop.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from netshrink.core.errors import ConfigError
from netshrink.core.model_io import output_tensor


class FeatureTap:
    """Keeps the latest output of the module at ``path`` inside ``model`` (a forward hook): its
    main tensor when the module returns a tuple or an output object (``core.model_io``), as
    transformer blocks and Hugging Face base models do."""

    def __init__(self, model: nn.Module, path: str, role: str) -> None:
        try:
            module = model.get_submodule(path)
        except AttributeError:
            names = [name for name, _ in model.named_modules() if name][:12]
            raise ConfigError(f"the {role} has no layer {path!r}; name one of {names}") from None
        self.output: torch.Tensor | None = None
        self.handle = module.register_forward_hook(self._keep)

    def _keep(self, module: nn.Module, inputs: tuple, output: Any) -> None:
        try:
            self.output = output_tensor(output)
        except TypeError:
            raise ConfigError(f"a tapped layer must output a tensor, {type(module).__name__} gives "
                              f"{type(output).__name__}") from None

    def take(self) -> torch.Tensor:
        """The captured output (forgotten afterwards, so a stale one is never reused)."""
        output, self.output = self.output, None
        if output is None:
            raise RuntimeError("the tapped layer did not run in the last forward pass")
        return output


def make_projection(student_feature: torch.Tensor, teacher_feature: torch.Tensor) -> nn.Module:
    """The regressor from a student feature's shape to a teacher feature's (batch dim first)."""
    if student_feature.ndim == 4 and teacher_feature.ndim == 4:
        return nn.Conv2d(student_feature.shape[1], teacher_feature.shape[1], kernel_size=1)
    return nn.Linear(student_feature[0].numel(), teacher_feature[0].numel())


class HintedStudent(nn.Module):
    """The student plus the hint projection: ``forward`` returns the student's logits and keeps
    the projected hint feature in ``self.projected`` for the loss."""

    def __init__(self, student: nn.Module, layer: str, projection: nn.Module,
                 teacher_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.student = student
        self.projection = projection
        self.teacher_shape = teacher_shape  # one sample's teacher feature shape
        self.tap = FeatureTap(student, layer, "student")
        self.projected: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.student(x)
        feature = self.tap.take()
        if feature.shape[0] != len(x):
            raise ConfigError(f"the student's hint layer gives shape {tuple(feature.shape)} for a batch of {len(x)}; "
                              "name a layer whose output has the batch first")
        if isinstance(self.projection, nn.Conv2d):
            projected = self.projection(feature)  # (B, C_teacher, H_student, W_student)
            if projected.shape[2:] != self.teacher_shape[1:]:
                projected = F.adaptive_avg_pool2d(projected, self.teacher_shape[1:])
        else:
            projected = self.projection(feature.flatten(1)).view(len(x), *self.teacher_shape)
        self.projected = projected
        return logits


def hint_loss(student: HintedStudent, teacher_tap: FeatureTap) -> torch.Tensor:
    """Mean squared error between the projected student feature and the teacher's (sec. 2.2)."""
    projected, target = student.projected, teacher_tap.take()
    if projected is None:
        raise RuntimeError("the hinted student has not run a forward pass")
    if target.shape != projected.shape:
        raise ConfigError(f"the teacher's hint layer gives shape {tuple(target.shape)}, expected "
                          f"{tuple(projected.shape)}; name a layer whose output has the batch first")
    return F.mse_loss(projected, target.float())
