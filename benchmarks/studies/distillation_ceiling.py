"""How far can distillation lift LeNet-300-100 on Fashion-MNIST? A wide search, many students at once.

The distillation benchmark (``benchmarks/distillation.py``) misses one target: distilling the kept
convnet into ``lenet300_100`` closes 12% of the test-accuracy gap, against 40% asked. This script
asks whether any transfer set, loss or schedule within reach would close it, by training many
students in one process on a GPU:

- **Transfer-set recipes** (a group of students each), the live teacher seeing exactly the views
  its students see ("consistent teaching", Beyer et al. 2022, sec. 3): the training split as is;
  horizontal flips; 1-pixel shifts (filled with the background value) and flips; mixup (Zhang et
  al. 2018; ``lambda ~ U(0, 1)``, the "function matching" inputs of Beyer et al. sec. 4) with flips,
  with and without shifts; CutMix (Yun et al. 2019) with flips. Each recipe's students trained
  "alone" see the same views, with the mixed labels where images are mixed.
- **Students** in every group: alone (cross-entropy, seeds 0 and 1); Hinton et al. 2015's loss at
  T 1, 2, 4 and alpha 0.5, 0.9, 1 (``netshrink.distillation.loss``'s definition); and FitNets hints
  (Romero et al. 2015, sec. 2.2) from the teacher's 256-unit penultimate layer, regressed from the
  student's ``fc1`` or ``fc2`` through a learned linear map, added to the loss.

Each student is the zoo's ``lenet300_100``, initialised exactly as ``create_for_data`` does with its
seed, then stacked: weights ``(M, in, out)`` and one batched matrix product per layer serve all M
students (``tests/benchmarks/test_distillation_ceiling.py`` checks it equals the zoo module and
the loss equals ``distillation_loss``). That makes a 200-epoch search of 70 students take minutes
on one GPU instead of days of ``fit`` runs; the stacked trainer (plain SGD with momentum and
weight decay, as ``torch.optim.SGD`` computes it, per-student cosine schedule) is hand-written
because no library trains a stack of differently-scheduled models in one pass. On CUDA the
teacher runs under bf16 autocast (its accuracy in that precision is reported).

Every student is scored on validation and test; choices are read on validation. Writes
``benchmarks/results/distillation_ceiling.json`` and the "What limits lenet300_100" part of
BENCHMARKS.md.

    python benchmarks/studies/distillation_ceiling.py --device cuda      # about 4.1 min on an H200
    python benchmarks/studies/distillation_ceiling.py --device cuda --deadline 228 --out DIR   # stop early
    python benchmarks/studies/distillation_ceiling.py --report DIR/distillation_ceiling.json   # publish it
    python benchmarks/studies/distillation_ceiling.py --quick            # a smoke test, into --out only
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.common import (  # noqa: E402
    CHECKPOINTS,
    ROOT,
    gap_closure,
    machine_info,
    percent,
    quick_subset,
    target,
    targets_markdown,
)
from benchmarks.common import publish as publish_results  # noqa: E402
from netshrink.core.files import write_atomically  # noqa: E402

LAYERS = ("fc1", "fc2", "fc3")
TEACHER_FEATURE = "classifier.1"  # the convnet's 256-unit layer (its output is rectified in place)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A transfer set: augmentation ops applied in order (``none``, ``flip``, ``shift1``, ``mixup``,
    ``cutmix``) and the epochs its students train."""
    name: str
    ops: tuple[str, ...]
    epochs: int


@dataclasses.dataclass(frozen=True)
class Student:
    """One student's loss: ``ce`` (alone) or ``kd`` (Hinton et al.'s, at ``T`` and ``alpha``), plus
    a hint from student layer ``hint`` (``fc1`` / ``fc2``) with weight ``hint_weight``."""
    name: str
    loss: str
    seed: int = 0
    T: float = 1.0
    alpha: float = 0.0
    hint: str | None = None
    hint_weight: float = 0.0


RECIPES = (Recipe("none_e100", ("none",), 100), Recipe("none_e200", ("none",), 200),
           Recipe("flip_e200", ("flip",), 200), Recipe("shift1_flip_e200", ("shift1", "flip"), 200),
           Recipe("mixup_flip_e200", ("mixup", "flip"), 200),
           Recipe("mixup_shift1_flip_e200", ("mixup", "shift1", "flip"), 200),
           Recipe("cutmix_flip_e200", ("cutmix", "flip"), 200))
STUDENTS = (Student("alone_s0", "ce", 0), Student("alone_s1", "ce", 1),
            Student("kd_T1_a1", "kd", 0, 1.0, 1.0), Student("kd_T2_a0.9_s0", "kd", 0, 2.0, 0.9),
            Student("kd_T2_a0.9_s1", "kd", 1, 2.0, 0.9), Student("kd_T4_a0.9", "kd", 0, 4.0, 0.9),
            Student("kd_T1_a0.5", "kd", 0, 1.0, 0.5),
            Student("kd_T2_a0.9_hint_fc2", "kd", 0, 2.0, 0.9, "fc2", 1.0),
            Student("kd_T1_a0.5_hint_fc2", "kd", 0, 1.0, 0.5, "fc2", 1.0),
            Student("kd_T2_a0.9_hint_fc1", "kd", 0, 2.0, 0.9, "fc1", 1.0))
BATCH, LR, MOMENTUM, WEIGHT_DECAY, WARMUP_EPOCHS = 512, 0.2, 0.9, 5e-4, 5


class StackedMLP:
    """M copies of the zoo's LeNet-300-100 as stacked tensors; copy ``m`` starts from
    ``create_for_data("lenet300_100", ...)`` under ``torch.manual_seed(seeds[m])``."""

    def __init__(self, seeds: list[int], input_shape, num_classes: int, device) -> None:
        from netshrink.models import create_for_data

        modules = []
        for seed in seeds:
            torch.manual_seed(seed)
            modules.append(create_for_data("lenet300_100", input_shape, num_classes))
        self.weights = [torch.stack([getattr(m, n).weight.detach().t() for m in modules]).to(device).requires_grad_()
                        for n in LAYERS]
        self.biases = [torch.stack([getattr(m, n).bias.detach()[None] for m in modules]).to(device).requires_grad_()
                       for n in LAYERS]

    def __call__(self, x: torch.Tensor, features: dict | None = None) -> torch.Tensor:
        """Logits (M, B, C) of inputs (M, B, D); ``features`` gets each hidden layer's output."""
        h = x
        for i, name in enumerate(LAYERS):
            h = torch.baddbmm(self.biases[i], h, self.weights[i])
            if features is not None and i < len(LAYERS) - 1:
                features[name] = h
            if i < len(LAYERS) - 1:
                h = F.relu(h)
        return h

    def parameters(self) -> list[torch.Tensor]:
        return self.weights + self.biases

    def module(self, m: int, input_shape, num_classes: int):
        """Copy ``m`` as a zoo module (to check the stack against the real model)."""
        from netshrink.models import create_for_data

        model = create_for_data("lenet300_100", input_shape, num_classes)
        with torch.no_grad():
            for i, name in enumerate(LAYERS):
                getattr(model, name).weight.copy_(self.weights[i][m].t())
                getattr(model, name).bias.copy_(self.biases[i][m, 0])
        return model


def augment(x: torch.Tensor, y: torch.Tensor, ops: tuple[str, ...], generator: torch.Generator,
            fill: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Views of a batch (B, 1, H, W) and the label mix they carry: ``(x, y_a, y_b, lam)``, the
    label being ``lam * y_a + (1 - lam) * y_b`` per sample (``lam`` 1 unless images are mixed)."""
    batch, _, height, width = x.shape
    dev = x.device
    lam, y_b = torch.ones(batch, device=dev), y
    for op in ops:
        if op == "none":
            continue
        if op == "flip":
            flip = torch.rand(batch, device=dev, generator=generator) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        elif op.startswith("shift"):
            k = int(op[len("shift"):])
            padded = F.pad(x, (k, k, k, k), value=fill)[:, 0]
            dy = torch.randint(0, 2 * k + 1, (batch,), device=dev, generator=generator)
            dx = torch.randint(0, 2 * k + 1, (batch,), device=dev, generator=generator)
            rows = dy[:, None] + torch.arange(height, device=dev)[None]
            cols = dx[:, None] + torch.arange(width, device=dev)[None]
            x = padded[torch.arange(batch, device=dev)[:, None, None], rows[:, :, None], cols[:, None, :]][:, None]
        elif op == "mixup":
            partner = torch.randperm(batch, device=dev, generator=generator)
            lam = torch.rand(batch, device=dev, generator=generator)
            x = lam[:, None, None, None] * x + (1 - lam[:, None, None, None]) * x[partner]
            y_b = y[partner]
        elif op == "cutmix":
            partner = torch.randperm(batch, device=dev, generator=generator)
            side = (torch.sqrt(1 - torch.rand(batch, device=dev, generator=generator)) * height).long()
            cy = torch.randint(0, height, (batch,), device=dev, generator=generator)
            cx = torch.randint(0, width, (batch,), device=dev, generator=generator)
            rows, cols = torch.arange(height, device=dev)[None], torch.arange(width, device=dev)[None]
            inside_rows = (rows >= (cy - side // 2)[:, None]) & (rows < (cy + side // 2)[:, None])
            inside_cols = (cols >= (cx - side // 2)[:, None]) & (cols < (cx + side // 2)[:, None])
            box = inside_rows[:, :, None] & inside_cols[:, None, :]
            x = torch.where(box[:, None], x[partner], x)
            lam = 1 - box.float().mean((1, 2))
            y_b = y[partner]
        else:
            raise ValueError(f"unknown augmentation op {op!r}")
    return x, y, y_b, lam


def student_losses(logits: torch.Tensor, teacher_logits: torch.Tensor, y_a: torch.Tensor, y_b: torch.Tensor,
                   lam: torch.Tensor, T: torch.Tensor, alpha: torch.Tensor, is_kd: torch.Tensor) -> torch.Tensor:
    """Each student's batch-mean loss (M,): for ``kd`` students ``alpha * T^2 * KL(softmax(t / T) ||
    softmax(s / T)) + (1 - alpha) * CE``, for the others CE; CE against the mixed labels. The same
    as ``netshrink.distillation.loss.distillation_loss`` per student (tested). Inputs: logits (M, B, C),
    labels and ``lam`` (M, B), T / alpha / is_kd (M,)."""
    log_p = F.log_softmax(logits.float(), -1)
    ce = -(lam * log_p.gather(-1, y_a[..., None])[..., 0] + (1 - lam) * log_p.gather(-1, y_b[..., None])[..., 0])
    temperature = T[:, None, None]
    log_student = F.log_softmax(logits.float() / temperature, -1)
    targets = F.softmax(teacher_logits.float() / temperature, -1)
    kl = (targets * (torch.log(targets.clamp_min(1e-30)) - log_student)).sum(-1) * (T[:, None] ** 2)
    per_sample = torch.where(is_kd[:, None], alpha[:, None] * kl + (1 - alpha[:, None]) * ce, ce)
    return per_sample.mean(1)


def lr_at(step: int, epochs: int, steps_per_epoch: int) -> float:
    """``fit``'s schedule: linear warm-up over ``WARMUP_EPOCHS``, then cosine to 0 at ``epochs``."""
    total, warm = epochs * steps_per_epoch, WARMUP_EPOCHS * steps_per_epoch
    if step >= total:
        return 0.0
    if step < warm:
        return LR * (step + 1) / warm
    return LR * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def search(data, teacher, recipes, students, device, steps_per_epoch: int | None = None,
           eval_every: int = 25, deadline_s: float = float("inf"), log=print) -> dict:
    """Train ``students`` under every recipe at once; returns the accuracies and curves."""
    from netshrink.distillation.hints import FeatureTap

    began = time.perf_counter()
    G, S = len(recipes), len(students)
    M = G * S
    x_train, y_train = data.train.x.to(device), data.train.y.to(device)
    splits = {"val": (data.val.x.to(device).flatten(1), data.val.y.to(device)),
              "test": (data.test.x.to(device).flatten(1), data.test.y.to(device))}
    fill = float(data.train.x.min())  # the background pixel (normalised)
    cuda = torch.device(device).type == "cuda"
    teacher = teacher.to(device).eval()
    if cuda:
        teacher = teacher.to(memory_format=torch.channels_last)
    tap = FeatureTap(teacher, TEACHER_FEATURE, "teacher")
    net = StackedMLP([students[m % S].seed for m in range(M)], data.input_shape, data.num_classes, device)
    hinted = {layer: torch.tensor([m for m in range(M) if students[m % S].hint == layer], dtype=torch.long,
                                  device=device) for layer in ("fc1", "fc2")}
    width = {"fc1": net.weights[0].shape[2], "fc2": net.weights[1].shape[2]}
    feature_width = teacher.get_submodule(TEACHER_FEATURE).out_features
    generator = torch.Generator().manual_seed(7)
    projections = {}
    for layer, rows in hinted.items():
        if len(rows):
            bound = 1 / math.sqrt(width[layer])
            projections[layer] = (
                torch.empty(len(rows), width[layer], feature_width).uniform_(-bound, bound, generator=generator)
                .to(device).requires_grad_(),
                torch.empty(len(rows), 1, feature_width).uniform_(-bound, bound, generator=generator)
                .to(device).requires_grad_())
    projection_init = {layer: (w.detach().clone(), b.detach().clone()) for layer, (w, b) in projections.items()}
    every = torch.arange(M, device=device)
    params = net.parameters() + [p for pair in projections.values() for p in pair]
    param_rows = [every] * len(net.parameters()) + [hinted[layer] for layer in projections for _ in range(2)]
    momenta = [torch.zeros_like(p) for p in params]
    column = {n: torch.tensor([getattr(students[m % S], n) for m in range(M)], device=device, dtype=torch.float32)
              for n in ("T", "alpha", "hint_weight")}
    is_kd = torch.tensor([students[m % S].loss == "kd" for m in range(M)], device=device)
    group = torch.arange(M, device=device) // S  # each student's recipe
    views_generators = [torch.Generator(device=device).manual_seed(100 + g) for g in range(G)]
    order_generator = torch.Generator(device=device).manual_seed(0)
    steps_per_epoch = steps_per_epoch or max(1, len(x_train) // BATCH)
    epochs = max(r.epochs for r in recipes)
    curves: dict[str, list[dict]] = {f"{r.name}/{s.name}": [] for r in recipes for s in students}

    def evaluate(epoch: int) -> None:
        with torch.no_grad():
            accs = {name: (net(x[None].expand(M, -1, -1)).argmax(-1) == y[None]).float().mean(1).tolist()
                    for name, (x, y) in splits.items()}
        for m in range(M):
            recipe, student = recipes[m // S], students[m % S]
            if epoch <= recipe.epochs:
                curves[f"{recipe.name}/{student.name}"].append(
                    {"epoch": epoch, "val_acc": accs["val"][m], "test_acc": accs["test"][m]})

    step, stopped = 0, None
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(x_train), device=device, generator=order_generator)
        for i in range(steps_per_epoch):
            index = order[i * BATCH:(i + 1) * BATCH]
            views = [augment(x_train[index], y_train[index], r.ops, views_generators[g], fill)
                     for g, r in enumerate(recipes)]
            x = torch.stack([v[0] for v in views])  # (G, B, 1, H, W)
            with torch.no_grad(), torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=cuda):
                flat = x.flatten(0, 1)
                teacher_logits = teacher(flat.contiguous(memory_format=torch.channels_last) if cuda else flat)
                teacher_feature = tap.take().float().view(G, len(index), -1)
            teacher_logits = teacher_logits.float().view(G, len(index), -1)[group]
            features: dict[str, torch.Tensor] = {}
            logits = net(x.flatten(2)[group], features)
            y_a, y_b, lam = (torch.stack([v[k] for v in views])[group] for k in (1, 2, 3))
            per_student = student_losses(logits, teacher_logits, y_a, y_b, lam, column["T"], column["alpha"], is_kd)
            loss = per_student.sum()
            for layer, (weight, bias) in projections.items():
                rows = hinted[layer]
                projected = torch.baddbmm(bias, features[layer][rows], weight)
                error = ((projected - teacher_feature[group[rows]]) ** 2).mean((1, 2))
                loss = loss + (column["hint_weight"][rows] * error).sum()
            grads = torch.autograd.grad(loss, params)
            lr_rows = torch.tensor([lr_at(step, r.epochs, steps_per_epoch) for r in recipes], device=device)[group]
            with torch.no_grad():
                for p, g_, v, rows in zip(params, grads, momenta, param_rows, strict=True):
                    v.mul_(MOMENTUM).add_(g_ + WEIGHT_DECAY * p)  # torch.optim.SGD, dampening 0
                    p.sub_(lr_rows[rows].view(-1, *([1] * (p.dim() - 1))) * v)
            step += 1
        stopping = time.perf_counter() - began > deadline_s and epoch < epochs
        if stopping or epoch % eval_every == 0 or epoch in {r.epochs for r in recipes}:
            evaluate(epoch)
            log(f"epoch {epoch}/{epochs}  {time.perf_counter() - began:.0f} s")
        if stopping:
            stopped = epoch
            log(f"stopped by the deadline after epoch {epoch}")
            break
    tap.handle.remove()
    with torch.no_grad(), torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=cuda):
        teacher_acc = {name: float((teacher(x.view(-1, *data.input_shape)).argmax(-1) == y).float().mean())
                       for name, (x, y) in splits.items()}
    return {"curves": curves, "teacher": teacher_acc, "stopped_after_epoch": stopped,
            "seconds": time.perf_counter() - began, "steps_per_epoch": steps_per_epoch,
            "students": net, "projections": projections,  # these three are not written out
            "projection_init": projection_init}


def summarise(found: dict, recipes, students) -> dict:
    """Per recipe: the alone mean, the distilled student chosen on validation, its gap closure."""
    teacher_test = found["teacher"]["test"]
    final = {key: curve[-1] for key, curve in found["curves"].items() if curve}
    rows = []
    for r in recipes:
        alone = [final[f"{r.name}/{s.name}"] for s in students if s.loss == "ce" and s.hint is None]
        taught = [(s.name, final[f"{r.name}/{s.name}"]) for s in students if s.loss == "kd"]
        if not alone or not taught:
            continue
        alone_test = sum(a["test_acc"] for a in alone) / len(alone)
        chosen, best = max(taught, key=lambda item: item[1]["val_acc"])
        rows.append({"recipe": r.name, "epochs_done": best["epoch"], "alone_test_acc": alone_test,
                     "alone_val_acc": sum(a["val_acc"] for a in alone) / len(alone),
                     "chosen_on_val": chosen, "chosen_val_acc": best["val_acc"], "chosen_test_acc": best["test_acc"],
                     "best_distilled_test_acc": max(t["test_acc"] for _, t in taught),
                     "gap_closure": gap_closure(best["test_acc"], alone_test, teacher_test)})
    if not rows:
        raise ValueError("summarise needs a recipe with both an alone and a distilled student")
    chosen = max(rows, key=lambda row: row["chosen_val_acc"])
    weakest_alone = min(row["alone_test_acc"] for row in rows)
    ceiling = max(row["best_distilled_test_acc"] for row in rows)
    return {"recipes": rows, "chosen_recipe": chosen["recipe"], "chosen": chosen,
            "best_distilled_test_acc_any": ceiling, "weakest_alone_test_acc": weakest_alone,
            "closure_bound": gap_closure(ceiling, weakest_alone, teacher_test),
            "needed_for_40pct_vs_weakest_alone": weakest_alone + 0.4 * (teacher_test - weakest_alone)}


def _deadline_flag(measured: dict) -> str:
    if not measured["stopped_after_epoch"]:
        return ""
    return f" --deadline {measured['deadline_s']:g}" if "deadline_s" in measured else " --deadline S"


def _lr_left(epoch: int, epochs: int) -> float:
    """The fraction of the peak lr a run of ``epochs`` epochs has after ``epoch`` (of any length)."""
    return lr_at(epoch * 1000, epochs, 1000) / LR


def markdown(doc: dict) -> str:
    s, m = doc["summary"], doc["measurements"]
    lines = [
        "### What limits lenet300_100 (a wider search)",
        "",
        f"`python benchmarks/studies/distillation_ceiling.py --device {doc['device_arg']}"
        f"{_deadline_flag(m)}` on {doc['device']}, "
        f"{m['seconds'] / 60:.1f} min: {len(m['students'])} students (seeds 0 and 1 for the alone "
        f"and T 2 students, else seed 0) in each of {len(m['recipes'])} transfer-set recipes, "
        f"all trained at once, batch {BATCH}, lr {LR}, cosine"
        f"{', TF32 matmuls' if doc['device_arg'].startswith('cuda') else ''}; the teacher (kept convnet, "
        f"{doc['summary_teacher']['test'] * 100:.2f}% test in {m['teacher_precision']}) sees the same views. "
        "Students' names: T, alpha, hint layer."
        + (f" Stopped by `--deadline` after epoch {m['stopped_after_epoch']}: every recipe is scored at its "
           f"last evaluation ('epochs' below), the longest then at "
           f"{_lr_left(m['stopped_after_epoch'], max(r['epochs'] for r in m['recipes'])):.1%} of its peak lr."
           if m["stopped_after_epoch"] else ""),
        "",
        "| recipe | epochs | alone (test) | distilled, chosen on val | its val / test | gap closed | "
        "best distilled test |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in s["recipes"]:
        lines.append(f"| {row['recipe']} | {row['epochs_done']} | {row['alone_test_acc'] * 100:.2f}% | "
                     f"{row['chosen_on_val']} | "
                     f"{row['chosen_val_acc'] * 100:.2f}% / {row['chosen_test_acc'] * 100:.2f}% | "
                     f"{percent(row['gap_closure'])} | {row['best_distilled_test_acc'] * 100:.2f}% |")
    lines += ["", f"Chosen on validation: {s['chosen_recipe']} ({s['chosen']['chosen_on_val']}), "
              f"{percent(s['chosen']['gap_closure'])} of its recipe's gap. No distilled student of any recipe "
              f"passed {s['best_distilled_test_acc_any'] * 100:.2f}% test; 40% of the gap from the weakest "
              f"alone recipe ({s['weakest_alone_test_acc'] * 100:.2f}%) needs "
              f"{s['needed_for_40pct_vs_weakest_alone'] * 100:.2f}%, so even that pairing closes at most "
              f"{percent(s['closure_bound'])}.", "", targets_markdown(doc["targets"])]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="2 recipes, 3 students, 2 short epochs; into --out")
    parser.add_argument("--deadline", type=float, default=float("inf"),
                        help="stop after the epoch that passes this many seconds (recorded)")
    parser.add_argument("--out", type=Path, default=None, help="write the results here instead of benchmarks/results")
    parser.add_argument("--report", type=Path, default=None,
                        help="train nothing: publish this results file (made with --out, on a GPU machine, say)")
    args = parser.parse_args()
    if args.report is not None:
        return publish(json.loads(args.report.read_text()))

    from netshrink.data import load_dataset
    from netshrink.train import load_model

    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    data = load_dataset("fashion-mnist")
    recipes, students, steps = RECIPES, STUDENTS, None
    if args.quick:
        data = quick_subset(data, {"train": 2048, "val": 512, "test": 512})
        recipes = (Recipe("none_e2", ("none",), 2), Recipe("mixup_shift1_flip_e2", ("mixup", "shift1", "flip"), 2))
        students = (STUDENTS[0], STUDENTS[3], STUDENTS[7])
        steps = 2
    teacher = load_model(CHECKPOINTS / "convnet.safetensors")
    found = search(data, teacher, recipes, students, args.device, steps_per_epoch=steps,
                   eval_every=1 if args.quick else 25, deadline_s=args.deadline,
                   log=lambda line: print(line, flush=True))
    summary = summarise(found, recipes, students)
    closure = summary["chosen"]["gap_closure"]  # None (no target) when the teacher is not ahead
    targets = [] if closure is None else [
        target("lenet300_100 gap closure, recipe and loss chosen on validation (wider search)", closure, 0.4, ">=")]
    device_name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu"
    doc = {"benchmark": "distillation_ceiling", "quick": args.quick,
           "date": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()), "machine": machine_info(),
           "device": device_name, "device_arg": args.device,
           "targets": targets,
           "summary": summary, "summary_teacher": found["teacher"],
           "measurements": {"recipes": [dataclasses.asdict(r) for r in recipes],
                            "students": [dataclasses.asdict(s) for s in students],
                            "batch_size": BATCH, "lr": LR, "momentum": MOMENTUM, "weight_decay": WEIGHT_DECAY,
                            "warmup_epochs": WARMUP_EPOCHS, "schedule": "cosine",
                            "teacher_precision": "bf16 autocast" if args.device.startswith("cuda") else "fp32",
                            "student_matmul": "TF32" if args.device.startswith("cuda") else "fp32",
                            "deadline_s": args.deadline if math.isfinite(args.deadline) else None,
                            "seconds": found["seconds"], "steps_per_epoch": found["steps_per_epoch"],
                            "stopped_after_epoch": found["stopped_after_epoch"], "curves": found["curves"]}}
    out = args.out or (ROOT / "runs" / "distillation_ceiling-quick" if args.quick else None)
    if out is None:
        return publish(doc)
    out.mkdir(parents=True, exist_ok=True)
    write_atomically(out / "distillation_ceiling.json", (json.dumps(doc, indent=2) + "\n").encode())
    print(markdown(doc))


def publish(doc: dict) -> None:
    """Write ``doc`` to ``benchmarks/results`` and its section of BENCHMARKS.md."""
    if doc.get("quick"):
        raise SystemExit("a --quick result is a smoke test; it is not published")
    publish_results("distillation_ceiling", doc, markdown)


if __name__ == "__main__":
    main()
