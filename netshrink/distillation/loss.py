"""The distillation loss of Hinton, Vinyals & Dean 2015 (sec. 2), with an ensemble's averaged targets."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_targets(teacher_logits: torch.Tensor, T: float) -> torch.Tensor:
    """The teachers' softened outputs averaged: ``mean_k softmax(z_k / T)``.

    ``teacher_logits`` is (K, B, C) for K teachers; the result is (B, C). Averaging the
    probabilities (not the logits) is the ensemble of the paper and of the lecture."""
    return F.softmax(teacher_logits.float() / T, dim=-1).mean(dim=0)


def distillation_loss(student_logits: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor,
                      T: float, alpha: float) -> torch.Tensor:
    """``alpha * T^2 * KL(targets || softmax(student / T)) + (1 - alpha) * CE(student, labels)``.

    The soft term's gradients scale as ``1 / T^2``; multiplying by ``T^2`` keeps the two terms'
    relative weight when T changes (sec. 2). The KL divergence differs from the paper's soft
    cross-entropy by the targets' entropy only, a constant, so the gradients are the same and a
    student matching its teacher exactly has zero soft loss. Means over the batch.
    """
    log_student = F.log_softmax(student_logits.float() / T, dim=-1)
    soft = F.kl_div(log_student, targets, reduction="batchmean") * (T * T)
    if alpha == 1.0:
        return soft
    return alpha * soft + (1.0 - alpha) * F.cross_entropy(student_logits, labels)


def matching_loss(student: torch.Tensor, teacher: torch.Tensor, loss: str, T: float = 1.0,
                  mask: torch.Tensor | None = None) -> torch.Tensor:
    """How far the student's outputs are from the teacher's, a mean over the batch's samples; when
    ``mask`` (B, L) marks the kept positions of outputs (B, L, ...), each sample's term is its mean
    over its kept tokens (a mean over samples, not over all tokens, so that ``fit`` under DDP, which
    weighs each process's loss by its share of the samples, trains as one process does).

    ``"kl"``: ``T^2 * KL(softmax(teacher / T) || softmax(student / T))`` over the last dimension
    (Hinton et al. 2015, sec. 2); ``"mse"``: the squared error averaged over the features;
    ``"cosine"``: ``1 - cos`` between feature vectors (the last dimension per token when masked,
    else each sample flattened).
    """
    student, teacher = student.float(), teacher.float()
    per_token = mask is not None and student.dim() == 3 and tuple(mask.shape) == tuple(student.shape[:2])
    if not per_token and loss != "kl":  # one feature vector per sample
        student, teacher = student.flatten(1), teacher.flatten(1)
    if loss == "kl":
        log_student = F.log_softmax(student / T, dim=-1)
        log_teacher = F.log_softmax(teacher / T, dim=-1)
        each = (log_teacher.exp() * (log_teacher - log_student)).sum(-1) * (T * T)
    elif loss == "mse":
        each = (student - teacher).pow(2).mean(-1)
    else:
        each = 1.0 - F.cosine_similarity(student, teacher, dim=-1)
    if per_token:  # (B, L) per token: each sample's mean over its kept tokens
        keep = mask.to(each.dtype)
        each = (each * keep).sum(1) / keep.sum(1).clamp_min(1.0)
    return each.mean()
