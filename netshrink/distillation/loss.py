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
