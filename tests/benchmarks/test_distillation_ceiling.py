"""The stacked-student search of ``benchmarks.studies.distillation_ceiling.py`` trains what it claims:
the zoo's LeNet-300-100 and ``netshrink.distillation``'s loss, on the views it names."""

import pytest
import torch
import torch.nn.functional as F

from benchmarks.studies.distillation_ceiling import (
    STUDENTS,
    Recipe,
    StackedMLP,
    augment,
    lr_at,
    search,
    student_losses,
    summarise,
)
from netshrink.data import Dataset, Split
from netshrink.distillation.loss import distillation_loss, soft_targets
from netshrink.models import create_for_data
from netshrink.train import FitConfig
from netshrink.train.fit import lr_factor

SHAPE = (1, 28, 28)


def test_each_stacked_student_is_the_zoo_model_with_its_seed():
    net = StackedMLP([0, 3], SHAPE, 10, "cpu")
    x = torch.randn(5, 784)
    for m, seed in enumerate([0, 3]):
        torch.manual_seed(seed)
        zoo = create_for_data("lenet300_100", SHAPE, 10)
        expected = zoo(x.view(5, *SHAPE))
        torch.testing.assert_close(net(x[None].expand(2, -1, -1))[m], expected)
        torch.testing.assert_close(net.module(m, SHAPE, 10)(x.view(5, *SHAPE)), expected)
    assert not torch.equal(net.weights[0][0], net.weights[0][1])


def test_student_losses_are_distillation_loss_and_cross_entropy():
    torch.manual_seed(0)
    logits, teacher = torch.randn(3, 8, 10), torch.randn(3, 8, 10)
    y = torch.randint(0, 10, (3, 8))
    T, alpha = torch.tensor([2.0, 4.0, 1.0]), torch.tensor([0.9, 1.0, 0.0])
    got = student_losses(logits, teacher, y, y, torch.ones(3, 8), T, alpha, torch.tensor([True, True, False]))
    for m in range(2):
        want = distillation_loss(logits[m], soft_targets(teacher[m][None], float(T[m])), y[m], float(T[m]),
                                 float(alpha[m]))
        torch.testing.assert_close(got[m], want)
    torch.testing.assert_close(got[2], F.cross_entropy(logits[2], y[2]))


def test_mixed_labels_weigh_both_partners():
    logits = torch.randn(1, 4, 10)
    y_a, y_b, lam = torch.tensor([[1, 2, 3, 4]]), torch.tensor([[5, 6, 7, 8]]), torch.tensor([[0.25, 0.5, 1.0, 0.0]])
    got = student_losses(logits, logits, y_a, y_b, lam, torch.ones(1), torch.zeros(1), torch.tensor([False]))
    want = (lam[0] * F.cross_entropy(logits[0], y_a[0], reduction="none")
            + (1 - lam[0]) * F.cross_entropy(logits[0], y_b[0], reduction="none")).mean()
    torch.testing.assert_close(got[0], want)


def test_views():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 28 * 28, dtype=torch.float32).view(2, 1, 28, 28)
    y = torch.tensor([0, 1])
    same, *_ = augment(x, y, ("none",), g, -1.0)
    assert torch.equal(same, x)
    flipped, *_ = augment(x, y, ("flip",), g, -1.0)
    assert all(torch.equal(flipped[i], x[i]) or torch.equal(flipped[i], x[i].flip(-1)) for i in range(2))
    shifted, *_ = augment(x, y, ("shift1",), g, -1.0)
    for i in range(2):  # a 1-pixel translation: an inner window of x appears in the view
        assert any(torch.equal(shifted[i, 0, 1:-1, 1:-1], x[i, 0, 1 + dy:27 + dy, 1 + dx:27 + dx])
                   for dy in (-1, 0, 1) for dx in (-1, 0, 1))
    big = torch.rand(64, 1, 28, 28)
    labels = torch.arange(64) % 10
    mixed, y_a, y_b, lam = augment(big, labels, ("mixup",), g, 0.0)
    assert ((lam >= 0) & (lam <= 1)).all() and torch.equal(y_a, labels)
    cut, _, y_b, lam = augment(big, labels, ("cutmix",), g, 0.0)
    kept = (cut == big).flatten(1).float().mean(1)
    assert torch.all(kept >= lam - 1e-6)  # at least the un-pasted fraction is the original


def test_schedule_matches_fit():
    config = FitConfig(epochs=20, lr=0.2, warmup_epochs=5, schedule="cosine")
    for step in (0, 3, 49, 50, 120, 199):
        assert abs(lr_at(step, 20, 10) - 0.2 * lr_factor(step, config, 10)) < 1e-9


def test_a_tiny_search_trains_and_summarises():
    torch.manual_seed(0)
    x = torch.randn(600, 1, 28, 28)
    y = torch.randint(0, 3, (600,))
    x[torch.arange(600), 0, y, y] += 4.0  # learnable: a bright pixel per class
    data = Dataset(name="toy", train=Split(x[:512], y[:512]), val=Split(x[512:556], y[512:556]),
                   test=Split(x[556:], y[556:]), num_classes=3, classes=("a", "b", "c"))
    teacher = _TinyTeacher()
    recipes = (Recipe("none_e30", ("none",), 30), Recipe("mixup_e3", ("mixup", "flip"), 3))
    students = (STUDENTS[0], STUDENTS[3], STUDENTS[7])
    found = search(data, teacher, recipes, students, "cpu", eval_every=10, log=lambda line: None)
    assert [row["epoch"] for row in found["curves"]["none_e30/alone_s0"]] == [3, 10, 20, 30]  # each 10th, each end
    assert [row["epoch"] for row in found["curves"]["mixup_e3/alone_s0"]] == [3]  # its last epoch
    assert found["curves"]["none_e30/alone_s0"][-1]["val_acc"] > 0.6
    summary = summarise(found, recipes, students)
    assert [row["recipe"] for row in summary["recipes"]] == ["none_e30", "mixup_e3"]
    assert summary["chosen"]["chosen_on_val"] in {"kd_T2_a0.9_s0", "kd_T2_a0.9_hint_fc2"}


def test_gap_closure_is_undefined_when_the_teacher_is_not_ahead():
    recipes, students = (Recipe("none_e1", ("none",), 1),), (STUDENTS[0], STUDENTS[3])
    found = {"teacher": {"test": 0.80},
             "curves": {"none_e1/alone_s0": [{"epoch": 1, "val_acc": 0.85, "test_acc": 0.85}],
                        "none_e1/kd_T2_a0.9_s0": [{"epoch": 1, "val_acc": 0.86, "test_acc": 0.86}]}}
    summary = summarise(found, recipes, students)
    assert summary["chosen"]["gap_closure"] is None and summary["closure_bound"] is None
    found["teacher"]["test"] = 0.95
    assert summarise(found, recipes, students)["chosen"]["gap_closure"] == pytest.approx(0.1)


class _TinyTeacher(torch.nn.Module):
    """Shaped like the convnet where the search reads it: ``classifier.1`` has ``out_features``."""

    def __init__(self):
        super().__init__()
        self.classifier = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 16), torch.nn.ReLU(),
                                              torch.nn.Linear(16, 3))

    def forward(self, x):
        return self.classifier(x)


def test_each_student_trains_as_torch_sgd_on_its_own_module():
    """Replays the search's batches for every student on its own zoo module (plus a Linear hint
    projection) with ``torch.optim.SGD`` and ``netshrink``'s losses: same weights afterwards, so
    students share nothing, projections get their student's lr, and a finished recipe stops."""
    from netshrink.distillation.hints import FeatureTap

    torch.manual_seed(0)
    n = 96
    x, y = torch.randn(n + 32, 1, 28, 28), torch.randint(0, 10, (n + 32,))
    data = Dataset(name="toy", train=Split(x[:n], y[:n]), val=Split(x[n:n + 16], y[n:n + 16]),
                   test=Split(x[n + 16:], y[n + 16:]), num_classes=10, classes=tuple("abcdefghij"))
    torch.manual_seed(5)
    teacher = create_for_data("convnet", SHAPE, 10).eval()
    recipes = (Recipe("flip_e2", ("flip",), 2), Recipe("mix_e3", ("mixup", "shift1", "flip"), 3))
    students = (STUDENTS[0], STUDENTS[4], STUDENTS[7], STUDENTS[9])  # alone, KD seed 1, hint fc2, hint fc1
    steps = 1  # a batch (512) is the whole toy split
    found = search(data, teacher, recipes, students, "cpu", steps_per_epoch=steps, eval_every=1, log=lambda line: None)
    net, projections = found["students"], found["projections"]

    # the same batches and views, in the same order as the search draws them
    views_generators = [torch.Generator().manual_seed(100 + g) for g in range(len(recipes))]
    order_generator = torch.Generator().manual_seed(0)
    fill = float(data.train.x.min())
    batches = []
    for _ in range(3):
        order = torch.randperm(n, generator=order_generator)
        for i in range(steps):
            index = order[i * 512:(i + 1) * 512]
            batches.append([augment(x[:n][index], y[:n][index], r.ops, views_generators[g], fill)
                            for g, r in enumerate(recipes)])
    tap = FeatureTap(teacher, "classifier.1", "teacher")
    with torch.no_grad():
        taught = [[(teacher(v[0]), tap.take().clone()) for v in views] for views in batches]
    tap.handle.remove()
    hinted = {layer: [m for m in range(len(recipes) * len(students)) if students[m % len(students)].hint == layer]
              for layer in ("fc1", "fc2")}
    for m in range(len(recipes) * len(students)):
        recipe, student = recipes[m // len(students)], students[m % len(students)]
        torch.manual_seed(student.seed)
        model = create_for_data("lenet300_100", SHAPE, 10)
        params = list(model.parameters())
        features = {}
        if student.hint:
            row = hinted[student.hint].index(m)
            weight, bias = projections[student.hint]
            projection = torch.nn.Linear(weight.shape[1], weight.shape[2])
            with torch.no_grad():  # start where the search's projection started: replay from its init
                projection.weight.copy_(found["projection_init"][student.hint][0][row].t())
                projection.bias.copy_(found["projection_init"][student.hint][1][row, 0])
            params += list(projection.parameters())
            layer = getattr(model, student.hint)
            layer.register_forward_hook(lambda mod, i, o, kept=features: kept.__setitem__("f", o))
        optimizer = torch.optim.SGD(params, lr=0.2, momentum=0.9, weight_decay=5e-4)
        for step, views in enumerate(batches):
            xv, y_a, y_b, lam = views[m // len(students)]
            teacher_logits, teacher_feature = taught[step][m // len(students)]
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, recipe.epochs, steps)
            out = model(xv)
            ce = (lam * F.cross_entropy(out, y_a, reduction="none")
                  + (1 - lam) * F.cross_entropy(out, y_b, reduction="none")).mean()
            loss = ce if student.loss == "ce" else (
                student.alpha * distillation_loss(out, soft_targets(teacher_logits[None], student.T), y_a,
                                                  student.T, 1.0) + (1 - student.alpha) * ce)
            if student.hint:
                loss = loss + student.hint_weight * F.mse_loss(projection(features["f"]), teacher_feature)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        torch.testing.assert_close(net.module(m, SHAPE, 10).state_dict(), model.state_dict(), atol=1e-5, rtol=1e-4)
        if student.hint:
            torch.testing.assert_close(weight[row].detach(), projection.weight.detach().t(), atol=1e-5, rtol=1e-4)
