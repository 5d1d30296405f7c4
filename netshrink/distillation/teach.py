"""``distill``: train a student on its teachers' softened outputs with the one ``fit`` loop.

Distillation is a loss, not a second training loop (Hinton, Vinyals & Dean 2015): ``distill``
builds ``loss_fn(logits, x, y)`` around the teachers (or their cached logits) and calls ``fit``,
so progress, checkpoints, exact resume after a kill and DDP under torchrun hold unchanged.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from netshrink.core.errors import ConfigError
from netshrink.data import Dataset
from netshrink.distillation.bias import without_classes
from netshrink.distillation.cache import CACHE_NAME, TeacherLogitCache
from netshrink.distillation.config import Distill
from netshrink.distillation.hints import FeatureTap, HintedStudent, hint_loss, make_projection
from netshrink.distillation.loss import distillation_loss, soft_targets
from netshrink.distillation.teacher import Teachers, probe
from netshrink.train import Callback, FitConfig, FitResult, LossFn, fit, save_model
from netshrink.train.fit import MODEL_NAME

_PROBE = 2  # samples run through both models to check they fit together


def distill(student: nn.Module, teacher: nn.Module | Sequence[nn.Module], data: Dataset, config: Distill,
            fit_config: FitConfig, out_dir: str | Path | None = None, resume: bool = False,
            progress: bool = True, device: str = "cpu", callbacks: Sequence[Callback] = ()) -> FitResult:
    """Train ``student`` in place on ``teacher``'s soft targets; returns ``fit``'s result.

    Args:
        student: any module mapping the data's inputs to logits (zoo model, user class).
        teacher: a trained model, or a list of them (an ensemble: softened outputs averaged).
            Teachers are frozen, put in eval mode and moved to the training device.
        data: the data set; the transfer set is ``data.train`` less ``config.omit_classes``.
        config: temperature, soft/hard mix, teacher-logit cache, omitted classes, hints.
        fit_config: the training run (epochs, optimizer, augmentation, seed, ...).
        out_dir, resume, progress, device, callbacks: as for ``fit``; with ``cache_teacher`` the
            cache is stored in ``out_dir`` too and reused by later runs on the same data.

    Every input is checked before anything is written: student and teachers must give the same
    number of outputs; the cache refuses augmentation and data or teachers it was not made for;
    hints need one teacher run live (no cache, no ensemble).
    """
    teachers = Teachers(teacher)
    transfer = without_classes(data, config.omit_classes)
    sample = transfer.train.x[:_PROBE]
    _check_outputs(student, teachers, sample)
    if config.cache_teacher and fit_config.augment:
        raise ConfigError("cached teacher logits are valid only without augmentation (the teacher must see "
                          "each augmented batch); drop the cache or the augmentation")
    if config.hint is not None and (config.cache_teacher or len(teachers) > 1):
        raise ConfigError("hints need one teacher run at every step; use a single teacher without the cache")
    out = Path(out_dir) if out_dir is not None else None
    cache = _teacher_cache(teachers, transfer, out, device) if config.cache_teacher else None
    model, loss_fn, taps = _student_and_loss(student, teachers, cache, config, sample)
    try:
        result = fit(model, transfer, fit_config, loss_fn=loss_fn, out_dir=out, resume=resume,
                     progress=progress, device=device, callbacks=callbacks)
    finally:
        for tap in taps:  # leave both models without our hooks
            tap.handle.remove()
    if model is not student:  # fit saved the student with its hint projection: keep the student alone
        if out is not None and int(os.environ.get("RANK", "0")) == 0:
            save_model(out / MODEL_NAME, student)
        result = dataclasses.replace(result, model=student)
    return result


def _check_outputs(student: nn.Module, teachers: Teachers, sample: torch.Tensor) -> None:
    student_out = probe(student, sample, "student")
    for index, model in enumerate(teachers.models):
        role = "teacher" if len(teachers) == 1 else f"teacher {index + 1}"
        teacher_out = probe(model, sample, role)
        if teacher_out.shape[1:] != student_out.shape[1:]:
            raise ConfigError(f"the {role} gives outputs of shape {tuple(teacher_out.shape[1:])} but the student "
                              f"{tuple(student_out.shape[1:])}; distil between models with the same outputs")


def _teacher_cache(teachers: Teachers, transfer: Dataset, out: Path | None, device: str) -> TeacherLogitCache:
    """The cache in ``out`` when it is there (checked against these teachers and this data), else
    computed now and stored there (by rank 0 under torchrun)."""
    fingerprints = teachers.fingerprints()
    path = out / CACHE_NAME if out is not None else None
    num_outputs = int(teachers.logits(transfer.train.x[:1].to(device)).shape[-1])
    if path is not None and path.is_file():
        return TeacherLogitCache.load(path, fingerprints, transfer.train.x, num_outputs)
    cache = TeacherLogitCache.compute(teachers, transfer.train.x, device)
    if path is not None and int(os.environ.get("RANK", "0")) == 0:
        cache.save(path, fingerprints)
    return cache


def _student_and_loss(student: nn.Module, teachers: Teachers, cache: TeacherLogitCache | None, config: Distill,
                      sample: torch.Tensor) -> tuple[nn.Module, LossFn, list[FeatureTap]]:
    """The module ``fit`` trains (the student, or the student with its hint projection), the loss,
    and the hooks to remove after training."""
    T, alpha = float(config.T), float(config.alpha)
    teacher_logits = cache.lookup if cache is not None else teachers.logits
    if config.hint is None:
        def loss_fn(logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return distillation_loss(logits, soft_targets(teacher_logits(x), T), y, T, alpha)

        return student, loss_fn, []

    student_layer, teacher_layer = config.hint
    teacher_tap = FeatureTap(teachers.models[0], teacher_layer, "teacher")
    student_tap = FeatureTap(student, student_layer, "student")
    probe(student, sample, "student")
    probe(teachers.models[0], sample, "teacher")
    student_feature, teacher_feature = student_tap.take(), teacher_tap.take()
    student_tap.handle.remove()
    model = HintedStudent(student, student_layer, make_projection(student_feature, teacher_feature),
                          tuple(teacher_feature.shape[1:]))
    weight = float(config.hint_weight)

    def hinted_loss_fn(logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        targets = soft_targets(teacher_logits(x), T)
        return distillation_loss(logits, targets, y, T, alpha) + weight * hint_loss(model, teacher_tap)

    return model, hinted_loss_fn, [teacher_tap, model.tap]
