"""The loss of Hinton et al. 2015 against its formula, written out independently."""

import pytest
import torch
import torch.nn.functional as F

from netshrink.distillation import distillation_loss, matching_loss, soft_targets


def _reference(student, teacher, labels, T, alpha):
    p = torch.softmax(teacher / T, dim=1)
    log_q = torch.log_softmax(student / T, dim=1)
    kl = (p * (torch.log(p) - log_q)).sum(1).mean()
    return alpha * T * T * kl + (1 - alpha) * F.cross_entropy(student, labels)


@pytest.mark.parametrize("T", [1.0, 4.0, 20.0])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_loss_matches_formula(T, alpha):
    generator = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(2, 16, 10, generator=generator)
    labels = torch.randint(0, 10, (16,), generator=generator)
    ours = distillation_loss(student, soft_targets(teacher[None], T), labels, T, alpha)
    torch.testing.assert_close(ours, _reference(student, teacher, labels, T, alpha))


def test_soft_loss_is_zero_when_student_matches_teacher():
    logits = torch.randn(8, 10)
    loss = distillation_loss(logits, soft_targets(logits[None], 4.0), torch.zeros(8, dtype=torch.long), 4.0, 1.0)
    assert abs(float(loss)) < 1e-6


def test_soft_gradient_scale_does_not_shrink_with_temperature():
    # without the T^2 factor the soft gradients fall as 1/T^2 (sec. 2); with it they stay of the same order
    generator = torch.Generator().manual_seed(1)
    teacher = torch.randn(32, 10, generator=generator) * 3
    norms = []
    for T in (2.0, 20.0):
        student = torch.randn(32, 10, generator=torch.Generator().manual_seed(2)).requires_grad_()
        distillation_loss(student, soft_targets(teacher[None], T), torch.zeros(32, dtype=torch.long), T, 1.0).backward()
        norms.append(float(student.grad.norm()))
    assert 0.2 < norms[1] / norms[0] < 5.0


def test_ensemble_targets_average_probabilities_not_logits():
    a, b = torch.tensor([[4.0, 0.0]]), torch.tensor([[0.0, 0.0]])
    T = 1.0
    averaged = soft_targets(torch.stack([a, b]), T)
    torch.testing.assert_close(averaged, (torch.softmax(a, 1) + torch.softmax(b, 1)) / 2)
    assert not torch.allclose(averaged, torch.softmax((a + b) / 2, 1))


def test_matching_loss_kl_is_hintons_soft_term_and_masked_tokens_do_not_count():
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(4, 5, 7, generator=g), torch.randn(4, 5, 7, generator=g)
    flat = matching_loss(student[:, 0], teacher[:, 0], "kl", 2.0)
    expected = F.kl_div(F.log_softmax(student[:, 0] / 2, -1), F.softmax(teacher[:, 0] / 2, -1),
                        reduction="batchmean") * 4
    assert torch.allclose(flat, expected)
    mask = torch.ones(4, 5, dtype=torch.long)
    mask[0, 3:] = 0
    for loss in ("kl", "mse", "cosine"):
        changed = student.clone()
        changed[0, 3:] += 5.0  # only masked positions change
        same = matching_loss(student, teacher, loss, 1.0, mask), matching_loss(changed, teacher, loss, 1.0, mask)
        assert torch.equal(*same)
        assert matching_loss(teacher, teacher, loss, 1.0, mask) < 1e-6
