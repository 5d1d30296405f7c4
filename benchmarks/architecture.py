"""Architecture benchmark: depthwise separable conversion and low-rank factorization of the kept
Fashion-MNIST models, and three tiny efficient students, side by side with the convnet.

    python benchmarks/architecture.py            # resumes finished stages from runs/architecture/
    python benchmarks/architecture.py --fresh    # recomputes every stage
    python benchmarks/architecture.py --quick    # a few hundred samples, 1 epoch: proves the script
                                                 # runs; writes only under runs/architecture-quick/
    python benchmarks/architecture.py --cached-only  # report the finished stages of a stopped run

Stages (each cached as ``<runs>/<stage>.json`` so a killed run resumes):

- ``convnet-baseline``: the kept convnet (``benchmarks/checkpoints``): accuracy, parameters and
  MACs (all, and of its Conv2d layers), CPU latency at batch 1 and 256.
- ``separable-init``: ``Separable(multiplier=1)`` on every convertible conv, initialised by the
  per-input-channel SVD and, for comparison, randomly: accuracy right after conversion, as
  converted and after re-estimating the BatchNorm statistics (no training).
- ``separable-costs``: the SVD-initialised conversion with BatchNorm re-estimated, no training:
  weights per layer, conv parameters and MACs, latency of the converted and the original model in
  the same run (the original timed before and after).
- ``separable-finetuned-e<epochs>``: the same, fine-tuned ``sep_epochs`` epochs distilled from the original
  convnet: accuracy, and the .nsk written and loaded back.
- ``low-rank-<model>-p<ratio>``: ``LowRank(param_ratio=ratio)`` on every Linear and Conv2d of
  lenet300_100 and the convnet: accuracy right after factorization and after fine-tuning
  ``low_rank_epochs`` epochs distilled from the original; a table and a PNG plot against kept
  parameters.
- ``student-<name>``: ``mobilenet_tiny``, ``shufflenet_tiny``, ``ghostnet_tiny`` trained
  ``student_epochs`` epochs distilled from the convnet: accuracy, parameters, MACs, latency.

Distillation uses the teacher's cached logits (``Distill(cache_teacher=True)``, one teacher pass
per teacher over the training split, shared by every stage through a copy of the cache file), so
training runs without augmentation. Learning rates are fixed, not tuned (the machine's 2 cores are
shared); test accuracy is reported, never used to choose. Training runs on 1 thread.

The protocol is a :class:`benchmarks.study.Study`: the ``Budget`` and learning rates are fixed in the
run folder's ``protocol.json`` before anything trains, nothing is chosen (no grid), and the accuracy
targets are judged on seeds 0, 1 and 2: ``separable-init`` with three random initialisations
(``-s<seed>``), ``separable-finetuned`` fine-tuned with three seeds; the other figures are seed 0's.

Writes ``benchmarks/results/architecture.json``, ``benchmarks/results/architecture_low_rank.png``
and the architecture section of BENCHMARKS.md (``--quick``: ``runs/architecture-quick/`` only).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from benchmarks.common import (  # noqa: E402
    CHECKPOINTS,
    RESULTS,
    ROOT,
    publish,
    repo_path,
    targets_markdown,
)
from benchmarks.study import Goal, Study  # noqa: E402
from netshrink.arch.finetune import finetune, reestimate_batchnorm_  # noqa: E402
from netshrink.arch.low_rank import LowRank, low_rank_  # noqa: E402
from netshrink.arch.separable import Separable, separable_  # noqa: E402
from netshrink.codec.container import load, save  # noqa: E402
from netshrink.core.files import write_atomically  # noqa: E402
from netshrink.core.transform_log import get_log  # noqa: E402
from netshrink.data import Dataset, Split, load_dataset  # noqa: E402
from netshrink.distillation import Distill  # noqa: E402
from netshrink.distillation.cache import CACHE_NAME  # noqa: E402
from netshrink.measure import (  # noqa: E402
    count_macs,
    count_macs_per_module,
    count_parameters,
    evaluate,
    measure_latency,
)
from netshrink.models import create_for_data  # noqa: E402
from netshrink.train import FitConfig, load_model  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much work each stage does."""

    sep_epochs: int
    low_rank_epochs: dict
    student_epochs: int
    ratios: tuple[float, ...]
    samples: int | None = None  # per split; None: all
    latency_repeats: tuple[int, int] = (100, 20)  # batch 1, batch 256


#: cut to what a 2-core machine shared with other jobs can do in about an hour
FULL = Budget(sep_epochs=4, low_rank_epochs={"lenet300_100": 2, "convnet": 1}, student_epochs=3,
              ratios=(0.1, 0.2, 0.4))
QUICK = Budget(sep_epochs=1, low_rank_epochs={"lenet300_100": 1, "convnet": 1}, student_epochs=1,
               ratios=(0.1, 0.4), samples=512, latency_repeats=(10, 3))
STUDENTS = ("mobilenet_tiny", "shufflenet_tiny", "ghostnet_tiny")
FINETUNE_LR, STUDENT_LR = 0.01, 0.05
INIT_GOAL = ("separable right after conversion and BatchNorm re-estimation: SVD minus random init, validation "
             "accuracy (points)")
GOALS = [Goal("separable: conv parameters, fewer (x)", ">=", 5.0, seeded=False),
         Goal("separable: conv MACs, fewer (x)", ">=", 5.0, seeded=False),
         Goal(INIT_GOAL, ">=", 0.0),
         Goal("separable fine-tuned: test accuracy below the convnet (points)", "<=", 1.0),
         Goal("whole benchmark, stage time summed (min)", "<=", 60.0, seeded=False)]


class Run:
    """The study (its stage store), data, budget and teacher-logit caches of one invocation."""

    def __init__(self, root: Path, fresh: bool, budget: Budget, data: Dataset, cached_only: bool = False) -> None:
        self.study = Study("architecture", root, data, grid={}, goals=GOALS, fresh=fresh, cached_only=cached_only,
                           budget={**dataclasses.asdict(budget), "finetune_lr": FINETUNE_LR, "student_lr": STUDENT_LR,
                                   "students": STUDENTS, "threads": 1, "device": "cpu"})
        self.study.record_choice("architecture", "none: budgets and learning rates are fixed")
        self.store, self.root, self.budget = self.study.store, self.study.store.root, budget
        self.data = dataclasses.replace(data, test=self.study.test("architecture"))
        self.stage, self.missing, self.minutes = self.store.stage, self.store.missing, self.store.minutes

    def train(self, model: nn.Module, teacher_name: str, teacher: nn.Module, stage: str, epochs: int,
              lr: float, seed: int = 0) -> dict:
        """Distil ``model`` from ``teacher`` (cached logits shared between stages); the history."""
        out = self.root / "train" / stage
        shared = self.root / "teacher-logits" / f"{teacher_name}.safetensors"
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        if shared.exists():
            shutil.copyfile(shared, out / CACHE_NAME)
        config = FitConfig(epochs=epochs, lr=lr, batch_size=128, schedule="cosine", seed=seed)
        result, how = finetune(model, teacher, self.data, config, Distill(cache_teacher=True), out_dir=out)
        if not shared.exists():
            shared.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(out / CACHE_NAME, shared)
        return {"fit_config": config.to_dict(), "trained_by": how, "history": result.history}


def subset(data: Dataset, samples: int | None) -> Dataset:
    """The first ``samples`` of each split (all when None)."""
    if samples is None:
        return data
    cut = {name: Split(getattr(data, name).x[:samples], getattr(data, name).y[:samples])
           for name in ("train", "val", "test")}
    return dataclasses.replace(data, **cut)


def conv_costs(model: nn.Module, shape) -> dict:
    """Parameters and MACs of the whole model and of its Conv2d layers."""
    macs = count_macs_per_module(model, shape)
    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    return {"params": count_parameters(model), "macs": count_macs(model, shape),
            "conv_params": sum(p.numel() for m in convs.values() for p in m.parameters()),
            "conv_macs": sum(macs.get(n, 0) for n in convs)}


def accuracy(model: nn.Module, data: Dataset) -> dict:
    return {"val_acc": evaluate(model, data.val), "test_acc": evaluate(model, data.test)}


def latency(model: nn.Module, shape, budget: Budget) -> dict:
    """Median ms per forward pass, 1 thread, batch 1 and 256."""
    return {f"batch_{b}": measure_latency(model, shape, batch_size=b, threads=1, warmup=3, repeats=r)["median_ms"]
            for b, r in zip((1, 256), budget.latency_repeats, strict=True)}


def saved_and_loaded(model: nn.Module, path: Path, data: Dataset) -> dict:
    """Write the .nsk and check the loaded model's outputs equal the model's."""
    save(model, path)
    model.eval()
    with torch.no_grad():
        same = torch.equal(model(data.test.x[:256]), load(path)(data.test.x[:256]))
    return {"nsk_bytes": path.stat().st_size, "loaded_outputs_equal": same}


def convnet() -> nn.Module:
    return load_model(CHECKPOINTS / "convnet.safetensors").eval()


def baseline_stage(run: Run) -> dict:
    model = convnet()
    return {**accuracy(model, run.data), **conv_costs(model, run.data.input_shape)}


def right_after(model: nn.Module, data: Dataset) -> dict:
    """Accuracy of a just-converted model as it is and after BatchNorm re-estimation (in place)."""
    raw = accuracy(model.eval(), data)
    reestimate_batchnorm_(model, data.train.x)
    return {**raw, "bn_reestimated": accuracy(model, data)}


def separable_init_stage(run: Run, seed: int = 0) -> dict:
    results = {}
    for init in ("svd", "random"):
        torch.manual_seed(seed)
        model = convnet()
        separable_(model, Separable(multiplier=1, init=init))
        results[init] = right_after(model, run.data)
    return results


def converted_convnet(run: Run) -> nn.Module:
    """The convnet with every convertible conv made depthwise separable (m = 1, SVD), BatchNorm re-estimated."""
    model = convnet()
    separable_(model, Separable(multiplier=1))
    return reestimate_batchnorm_(model, run.data.train.x).eval()


def separable_costs_stage(run: Run) -> dict:
    """What the conversion saves, no training: weights per layer, parameters, MACs, latency."""
    original, model = convnet(), converted_convnet(run)
    shape, budget = run.data.input_shape, run.budget
    timing = {"original": latency(original, shape, budget), "separable": latency(model, shape, budget),
              "original_again": latency(original, shape, budget)}
    return {**conv_costs(model, shape), "layers": get_log(model)[-1]["layers"], "latency_ms": timing}


def separable_finetuned_stage(run: Run, seed: int = 0) -> dict:
    original, model = convnet(), converted_convnet(run)
    tag = f"separable{f'-s{seed}' if seed else ''}"
    trained = run.train(model, "convnet", original, tag, run.budget.sep_epochs, FINETUNE_LR, seed)
    model.eval()
    return {**accuracy(model, run.data), **trained, **saved_and_loaded(model, run.root / f"{tag}.nsk", run.data)}


def low_rank_stage(run: Run, name: str, ratio: float) -> dict:
    def build() -> nn.Module:
        return load_model(CHECKPOINTS / f"{name}.safetensors").eval()

    original, model = build(), build()
    low_rank_(model, LowRank(param_ratio=ratio))
    record = get_log(model)[-1]
    converted = right_after(model, run.data)
    trained = run.train(model, name, original, f"low-rank-{name}-p{ratio}", run.budget.low_rank_epochs[name],
                        FINETUNE_LR)
    model.eval()
    kept = sum(v["weights_after"] for v in record["layers"].values())
    dense = sum(v["weights_before"] for v in record["layers"].values())
    return {"param_ratio": ratio, "right_after": converted, **accuracy(model, run.data),
            "params": count_parameters(model), "original_params": count_parameters(original),
            "factorized_weights": kept, "dense_weights": dense, "skipped": record["skipped"],
            "ranks": {n: v["rank"] for n, v in record["layers"].items()}, **trained}


def student_stage(run: Run, name: str) -> dict:
    torch.manual_seed(0)
    model = create_for_data(name, run.data.input_shape, run.data.num_classes)
    trained = run.train(model, "convnet", convnet(), f"student-{name}", run.budget.student_epochs, STUDENT_LR)
    model.eval()
    return {**accuracy(model, run.data), **conv_costs(model, run.data.input_shape), **trained,
            "latency_ms": latency(model, run.data.input_shape, run.budget)}


def plot(low_rank: dict, path: Path) -> None:
    """Accuracy against kept parameters, before and after fine-tuning, one panel per measured model."""
    low_rank = {name: rows for name, rows in low_rank.items() if rows}
    if not low_rank:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(low_rank), figsize=(5 * len(low_rank), 3.6))
    for axis, (name, rows) in zip(list(getattr(axes, "flat", [axes])), low_rank.items(), strict=True):
        params = [r["params"] for r in rows]
        axis.plot(params, [100 * r["right_after"]["bn_reestimated"]["test_acc"] for r in rows], "o--",
                  label="right after (BatchNorm re-estimated)")
        axis.plot(params, [100 * r["test_acc"] for r in rows], "o-", label="after fine-tuning")
        axis.axhline(100 * rows[0]["original_test_acc"], color="gray", lw=0.8, label="original")
        axis.set_xscale("log")
        axis.set(title=f"{name}: low rank (SVD)", xlabel="parameters kept", ylabel="test accuracy (%)")
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fresh", action="store_true", help="recompute every stage")
    parser.add_argument("--quick", action="store_true", help="tiny budgets; results under runs/architecture-quick/")
    parser.add_argument("--cached-only", action="store_true",
                        help="run no stage: report the finished ones, the rest as not measured")
    args = parser.parse_args()
    began = time.perf_counter()
    torch.manual_seed(0)
    torch.set_num_threads(1)  # the CPU is shared: one thread per job avoids oversubscription
    budget = QUICK if args.quick else FULL
    data = subset(load_dataset("fashion-mnist"), budget.samples)
    run = Run(ROOT / "runs" / ("architecture-quick" if args.quick else "architecture"), args.fresh, budget, data,
              args.cached_only)

    # cheapest and most asked-for first, so a run cut short has measured the most
    base = run.stage("convnet-baseline", lambda: baseline_stage(run))
    init = run.stage("separable-init", lambda: separable_init_stage(run))
    costs = run.stage("separable-costs", lambda: separable_costs_stage(run))
    low_rank: dict[str, list[dict]] = {"lenet300_100": [], "convnet": []}
    lenet_test = evaluate(load_model(CHECKPOINTS / "lenet300_100.safetensors"), data.test)
    _low_rank_rows(run, "lenet300_100", lenet_test, low_rank)
    sep = run.stage(f"separable-finetuned-e{budget.sep_epochs}", lambda: separable_finetuned_stage(run))
    seeds = run.study.seeds[1:]  # the accuracy targets' other seeds
    init_seeds = {0: init, **{s: run.stage(f"separable-init-s{s}", lambda s=s: separable_init_stage(run, s))
                              for s in seeds}}
    sep_seeds = {0: sep, **{s: run.stage(f"separable-finetuned-e{budget.sep_epochs}-s{s}",
                                         lambda s=s: separable_finetuned_stage(run, s)) for s in seeds}}
    students = {n: run.stage(f"student-{n}", lambda n=n: student_stage(run, n)) for n in STUDENTS}
    _low_rank_rows(run, "convnet", base["test_acc"], low_rank)
    students = {n: s for n, s in students.items() if s is not None}

    targets = []
    if costs is not None:
        targets += [
            run.study.target("separable: conv parameters, fewer (x)", base["conv_params"] / costs["conv_params"]),
            run.study.target("separable: conv MACs, fewer (x)", base["conv_macs"] / costs["conv_macs"])]
    if None not in init_seeds.values():
        targets.append(run.study.target(INIT_GOAL, {
            s: 100 * (r["svd"]["bn_reestimated"]["val_acc"] - r["random"]["bn_reestimated"]["val_acc"])
            for s, r in init_seeds.items()}))
    if None not in sep_seeds.values():
        targets.append(run.study.target("separable fine-tuned: test accuracy below the convnet (points)",
                                        {s: 100 * (base["test_acc"] - r["test_acc"]) for s, r in sep_seeds.items()}))
    stage_minutes = run.minutes()
    if not run.missing:
        targets.append(run.study.target("whole benchmark, stage time summed (min)", stage_minutes))
    speedup = None
    if costs is not None:
        timing = costs["latency_ms"]
        speedup = {b: min(timing["original"][b], timing["original_again"][b]) / timing["separable"][b]
                   for b in timing["separable"]}
    measurements = {"budget": dataclasses.asdict(budget), "convnet": base, "separable_init": init,
                    "separable_costs": costs, "separable_finetuned": sep, "separable_speedup": speedup,
                    "low_rank": low_rank, "students": students,
                    "seeds": {"separable_init": init_seeds, "separable_finetuned_test_acc": {
                        s: r["test_acc"] for s, r in sep_seeds.items() if r is not None}}}
    notes = ("Latency: 1 thread, median, on a CPU shared with other jobs (absolute times noisy); the original "
             "convnet is timed before and after the converted one and the faster of the two is the reference.")
    plot_path = (run.root if args.quick else RESULTS) / "architecture_low_rank.png"
    plot(low_rank, plot_path)
    doc = run.study.doc(measurements, targets, complete=not run.missing, device="cpu", quick=args.quick,
                        wall_minutes_this_invocation=(time.perf_counter() - began) / 60,
                        stage_minutes_summed=stage_minutes, not_measured=run.missing, plot=repo_path(plot_path),
                        notes=notes)
    if args.quick:
        write_atomically(run.root / "architecture.json", (json.dumps(doc, indent=2) + "\n").encode())
        (run.root / "architecture.md").write_text(markdown(doc) + "\n")
        print(markdown(doc))
    else:
        publish("architecture", doc, markdown)


def _low_rank_rows(run: Run, name: str, original_test: float, rows: dict[str, list[dict]]) -> None:
    for ratio in run.budget.ratios:
        row = run.stage(f"low-rank-{name}-p{ratio}", lambda r=ratio: low_rank_stage(run, name, r))
        if row is not None:
            rows[name].append({**row, "original_test_acc": original_test})


def markdown(doc: dict) -> str:
    """The architecture section of BENCHMARKS.md, from the results file alone."""
    m, quick, missing = doc["measurements"], doc["quick"], doc["not_measured"]
    base, init, costs, sep = m["convnet"], m["separable_init"], m["separable_costs"], m["separable_finetuned"]
    budget = m["budget"]
    lines = ["## Architecture (Fashion-MNIST)", "",
             f"`python benchmarks/architecture.py{' --quick' if quick else ''}`. From the kept convnet "
             f"(test {100 * base['test_acc']:.2f}%). Fine-tuning and students are distilled from the original "
             "model (cached teacher logits, no augmentation), fixed learning rates, 1 thread, CPU; test accuracy is "
             "reported, never used to choose."]
    if missing:
        lines += ["", f"**Not measured** (the run was stopped before these stages finished): {', '.join(missing)}."]
    if costs is not None:
        lat, speedup = costs["latency_ms"], m["separable_speedup"]
        tuned = f"{100 * sep['test_acc']:.2f}%" if sep is not None else "not measured"
        lines += ["", f"Depthwise separable conversion (multiplier 1), fine-tuned {budget['sep_epochs']} epoch(s):", "",
                  "| | convnet | separable | fewer |", "|---|---|---|---|",
                  f"| conv parameters | {base['conv_params']:,} | {costs['conv_params']:,} | "
                  f"{base['conv_params'] / costs['conv_params']:.1f}x |",
                  f"| conv MACs | {base['conv_macs']:,} | {costs['conv_macs']:,} | "
                  f"{base['conv_macs'] / costs['conv_macs']:.1f}x |",
                  f"| all parameters | {base['params']:,} | {costs['params']:,} | "
                  f"{base['params'] / costs['params']:.1f}x |",
                  f"| test accuracy, fine-tuned | {100 * base['test_acc']:.2f}% | {tuned} | |",
                  f"| latency batch 1, ms (original: before / after) | {lat['original']['batch_1']:.2f} / "
                  f"{lat['original_again']['batch_1']:.2f} | {lat['separable']['batch_1']:.2f} | "
                  f"{speedup['batch_1']:.2f}x |",
                  f"| latency batch 256, ms | {lat['original']['batch_256']:.1f} / "
                  f"{lat['original_again']['batch_256']:.1f} | {lat['separable']['batch_256']:.1f} | "
                  f"{speedup['batch_256']:.2f}x |", "",
                  "Per layer (weights, bias excluded):", "", "| layer | dense | separable | fewer |",
                  "|---|---|---|---|"]
        lines += [f"| {name} | {layer['weights_before']:,} | {layer['weights_after']:,} | {layer['ratio']:.2f}x |"
                  for name, layer in costs["layers"].items()]
    if init is not None:
        svd, rnd = init["svd"], init["random"]
        lines += ["", "Right after conversion (no training; test accuracy as converted / after re-estimating the "
                  f"BatchNorm statistics on 2,048 training images): SVD initialisation {100 * svd['test_acc']:.2f}% / "
                  f"{100 * svd['bn_reestimated']['test_acc']:.2f}%, random initialisation of the same layers "
                  f"{100 * rnd['test_acc']:.2f}% / {100 * rnd['bn_reestimated']['test_acc']:.2f}%."]
    lines += ["", "Low rank (`LowRank(param_ratio=p)` on every Linear and Conv2d, channel decomposition), fine-tuned "
              f"{budget['low_rank_epochs']} epochs; plot: `{doc['plot']}`.", "",
              "| model | p | parameters kept | test right after | BatchNorm re-estimated | fine-tuned | original |",
              "|---|---|---|---|---|---|---|"]
    for name, rows in m["low_rank"].items():
        for r in rows:
            lines.append(f"| {name} | {r['param_ratio']} | {r['params']:,} / {r['original_params']:,} | "
                         f"{100 * r['right_after']['test_acc']:.2f}% | "
                         f"{100 * r['right_after']['bn_reestimated']['test_acc']:.2f}% | {100 * r['test_acc']:.2f}% | "
                         f"{100 * r['original_test_acc']:.2f}% |")
    lines += ["", f"Tiny students, distilled from the convnet for {budget['student_epochs']} epochs (convnet latency "
              "from the separable-costs stage):", "",
              "| model | parameters | MACs | test accuracy | latency b1 (ms) | latency b256 (ms) |",
              "|---|---|---|---|---|---|"]
    if costs is not None:
        lat = costs["latency_ms"]
        lines.append(f"| convnet (teacher) | {base['params']:,} | {base['macs']:,} | {100 * base['test_acc']:.2f}% | "
                     f"{min(lat['original']['batch_1'], lat['original_again']['batch_1']):.2f} | "
                     f"{min(lat['original']['batch_256'], lat['original_again']['batch_256']):.1f} |")
    for name, s in m["students"].items():
        lines.append(f"| {name} | {s['params']:,} | {s['macs']:,} | {100 * s['test_acc']:.2f}% | "
                     f"{s['latency_ms']['batch_1']:.2f} | {s['latency_ms']['batch_256']:.1f} |")
    lines += ["", targets_markdown(doc["targets"])]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
