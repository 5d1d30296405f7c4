"""``recover``: train a compressed model back toward the original on unlabeled inputs.

The original model is the teacher and the compressed one the student; the loss matches chosen
outputs (``Recover``: logits by KL at T, hidden states or embeddings by MSE or cosine, or named
modules' outputs read by forward hooks) and needs no labels. It is a loss for the one ``fit``
loop, so progress, checkpoints, exact resume and DDP hold, and since the student is trained
through its parametrizations, pruning masks, quantization grids and codebooks hold too
(``finalize_`` afterwards bakes them in).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, default_collate
from torch.utils.data import Dataset as TorchDataset

from netshrink.core.errors import ConfigError, one_line
from netshrink.core.model_io import Inputs, call_model, map_tensors, output_tensor
from netshrink.data.dataset import Dataset, Split
from netshrink.data.unlabeled import UnlabeledInputs
from netshrink.distillation.config import Recover
from netshrink.distillation.hints import FeatureTap
from netshrink.distillation.loss import matching_loss
from netshrink.distillation.teacher import Teachers, device_of
from netshrink.train import Callback, FitConfig, FitResult, fit
from netshrink.train.batches import check_pair

_PROBE = 2  # samples run through both models to check they fit together


class _EvalMode(Callback):
    """Puts the student in eval mode before every step (``fit`` sets train mode each epoch)."""

    def on_step_begin(self, model: nn.Module, info: Any) -> None:
        model.eval()


def _hidden_paths(model: nn.Module, config: Recover) -> tuple[str, ...]:
    """The modules whose outputs are matched: ``config.layers``, else a Hugging Face model's base
    model (its ``last_hidden_state``), else none (the model's own output is the hidden state)."""
    if config.layers:
        return config.layers
    prefix = getattr(model, "base_model_prefix", None)
    if config.match != "logits" and prefix and isinstance(getattr(model, prefix, None), nn.Module):
        return (prefix,)
    return ()


def recover(student: nn.Module, teacher: nn.Module, data: Any, config: Recover, fit_config: FitConfig,
            out_dir: str | Path | None = None, resume: bool = False, progress: bool = True,
            device: str = "cpu", callbacks: Sequence[Callback] = ()) -> FitResult:
    """Train ``student`` in place toward ``teacher``'s outputs on unlabeled ``data``; returns
    ``fit``'s result (``train_loss`` is the matching loss, ``train_acc`` None).

    Args:
        student: the compressed model (pruned, quantized, clustered: trained through its
            parametrizations, so masks and grids hold).
        teacher: the original model; frozen, in eval mode, moved to the training device.
        data: unlabeled inputs: a tensor ``(N, ...)``, a dict of tensors such as a tokenizer's
            output, a map-style torch ``Dataset`` of such samples, or a ``DataLoader`` over one
            (its batch size must be ``fit_config.batch_size``); ``(x, y)`` pairs, a netshrink
            ``Split`` or ``Dataset`` (its training split) are read too, their labels unused.
        config: which outputs are matched, by which loss (``Recover``).
        fit_config, out_dir, resume, progress, device, callbacks: as for ``fit``.

    Student and teacher are run on two samples first; what cannot be matched (a module or an
    output the teacher lacks, outputs of different shapes, a teacher that gives integer labels
    rather than scores) is a one-line ``ConfigError`` before anything is written.
    """
    if not isinstance(teacher, nn.Module):
        raise ConfigError(f"give the original model as the teacher, got {type(teacher).__name__}")
    if not any(p.requires_grad for p in student.parameters()):
        raise ConfigError("the student has nothing to train (no parameter requires grad); give the compressed "
                          "model, not a frozen one")
    if isinstance(data, Dataset):  # a netshrink Dataset or Split: its inputs, labels unused
        data = data.train
    if isinstance(data, Split):
        data = data.x
    if isinstance(data, (torch.Tensor, Mapping)):
        data = UnlabeledInputs(data)
    teachers = Teachers(teacher)
    paths = _hidden_paths(teacher, config)
    student_taps: list[FeatureTap] = []
    teacher_taps: list[FeatureTap] = []
    frozen: list[nn.Parameter] = []
    try:
        for path in paths:
            student_taps.append(FeatureTap(student, path, "student"))
            teacher_taps.append(FeatureTap(teacher, path, "teacher"))
        first = _first_batch(data)
        _probe(student, teachers, student_taps, teacher_taps, first, config)
        loss_fn = _loss(teachers, student_taps, teacher_taps, config)
        frozen = _freeze_unused(student, loss_fn, first)
        return fit(student, data, fit_config, loss_fn=loss_fn, out_dir=out_dir, resume=resume,
                   progress=progress, device=device,
                   callbacks=(*callbacks, *(() if config.train_mode else (_EvalMode(),))))
    finally:
        for tap in (*student_taps, *teacher_taps):  # leave both models without our hooks
            tap.handle.remove()
        for parameter in frozen:
            parameter.requires_grad_(True)


def _freeze_unused(student: nn.Module, loss_fn: Any, x: Inputs) -> list[nn.Parameter]:
    """Turn off ``requires_grad`` of the student's parameters that the matched outputs do not
    depend on (a classifier or LM head when hidden states are matched), found by one backward pass
    on a few samples; returns them, to be turned back on. DDP needs every trained parameter to get
    a gradient at every step, and weight decay should not shrink weights the loss never sees."""
    trainable = [p for p in student.parameters() if p.requires_grad]
    was_training, saved = student.training, [p.grad for p in trainable]
    student.eval()
    try:
        for p in trainable:
            p.grad = None
        x = _to(x, device_of(student))
        loss_fn(output_tensor(call_model(student, x)), x, None).backward()
        unused = [p for p in trainable if p.grad is None]
    finally:
        for p, grad in zip(trainable, saved, strict=True):
            p.grad = grad
        student.train(was_training)
    for p in unused:
        p.requires_grad_(False)
    return unused


def _first_batch(data: Any) -> Inputs:
    """The inputs of the data's first ``_PROBE`` samples, collated as ``fit`` will read them."""
    dataset, collate = data, default_collate
    if isinstance(data, DataLoader):
        dataset, collate = data.dataset, data.collate_fn
    if not isinstance(dataset, TorchDataset) or not hasattr(dataset, "__len__"):
        raise ConfigError(f"recover trains on unlabeled inputs: a tensor, a dict of tensors, a map-style Dataset "
                          f"or a DataLoader, got {type(dataset).__name__}")
    if len(dataset) == 0:
        raise ConfigError("the unlabeled data is empty; give some inputs of the model")
    return check_pair(collate([dataset[i] for i in range(min(_PROBE, len(dataset)))]))[0]


def _matched(outputs: Any, logits: torch.Tensor, taps: list[FeatureTap], config: Recover,
             role: str) -> list[torch.Tensor]:
    """The tensors of one model's forward pass that are matched (``logits``: its main output)."""
    if config.match == "logits":
        if isinstance(outputs, Mapping) and "logits" not in outputs:
            raise ConfigError(f"the {role}'s output has no logits (it gives {', '.join(map(str, outputs))}); "
                              "match 'hidden' or 'embedding'")
        return [logits]
    return [tap.take() for tap in taps] if taps else [logits]


@torch.no_grad()
def _probe(student: nn.Module, teachers: Teachers, student_taps: list[FeatureTap], teacher_taps: list[FeatureTap],
           x: Inputs, config: Recover) -> None:
    """Run both models on a few samples and refuse, in one line, outputs that cannot be matched."""
    found = []
    for model, taps, role in ((student, student_taps, "student"), (teachers.models[0], teacher_taps, "teacher")):
        was_training = model.training
        model.eval()
        try:
            outputs = call_model(model, _to(x, device_of(model)))
        except (RuntimeError, TypeError, ValueError, IndexError) as exc:
            raise ConfigError(f"the {role} does not accept these inputs ({one_line(exc, 120)}); give inputs "
                              "of the model (token ids below its vocabulary size, the shape it takes)") from None
        finally:
            model.train(was_training)
        found.append(_matched(outputs, output_tensor(outputs), taps, config, role))
    for mine, theirs in zip(*found, strict=True):
        if not theirs.is_floating_point():
            raise ConfigError(f"the teacher gives {theirs.dtype} outputs (labels), not scores; recovery matches "
                              "logits or hidden states")
        if mine.shape[1:] != theirs.shape[1:]:
            raise ConfigError(f"the student gives outputs of shape {tuple(mine.shape[1:])} but the teacher "
                              f"{tuple(theirs.shape[1:])}; match outputs of the same shape")


def _to(x: Inputs, device: torch.device) -> Inputs:
    return map_tensors(x, lambda t: t.to(device))


def _loss(teachers: Teachers, student_taps: list[FeatureTap], teacher_taps: list[FeatureTap], config: Recover):
    """``loss_fn(logits, x, y)`` for ``fit``: the teacher runs on ``x``; labels are unused."""
    loss, T = config.resolved_loss, float(config.T)

    def loss_fn(logits: torch.Tensor, x: Inputs, y: torch.Tensor | None) -> torch.Tensor:
        teacher_out = teachers.outputs(x)[0]
        mine = _matched(None, logits, student_taps, config, "student")
        theirs = _matched(teacher_out, output_tensor(teacher_out), teacher_taps, config, "teacher")
        mask = x.get("attention_mask") if isinstance(x, Mapping) else None
        if config.match == "embedding":
            mine, theirs = [_mean_pool(t, mask) for t in mine], [_mean_pool(t, mask) for t in theirs]
            mask = None
        terms = [matching_loss(s, t, loss, T, mask) for s, t in zip(mine, theirs, strict=True)]
        return torch.stack(terms).mean()

    return loss_fn


def _mean_pool(hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Token states (B, L, H) averaged over the kept tokens (sentence-transformers' mean pooling);
    other shapes are the embedding already."""
    if hidden.dim() != 3:
        return hidden
    if mask is None or tuple(mask.shape) != tuple(hidden.shape[:2]):
        return hidden.mean(1)
    keep = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * keep).sum(1) / keep.sum(1).clamp_min(1.0)
