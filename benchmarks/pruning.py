"""Pruning benchmark: Han et al. 2015's 12x on LeNets against the torch.nn.utils.prune peer on the
same schedule and grid, and a structured half-width convnet, all from the kept Fashion-MNIST baselines.

    python benchmarks/pruning.py            # resumes finished runs from runs/pruning/
    python benchmarks/pruning.py --fresh    # recomputes every run
    python benchmarks/pruning.py --quick    # a few hundred samples, 1 epoch: proves the script (runs/pruning-quick/)

The protocol is a :class:`benchmarks.study.Study`, fixed in ``GRID`` and ``budget`` below:

- Global magnitude pruning of the Linear/Conv weights to ``SPARSITY``, ours (``GradualPrune``, Zhu &
  Gupta's cubic schedule over the first half of the fine-tuning, or ``MagnitudePrune`` once, then
  fine-tuning) and the peer (``torch.nn.utils.prune.global_unstructured``, L1, applied at the same
  steps to the same sparsities for the gradual schedule, or once). Both fine-tune for ``EPOCHS`` on the
  labels or distilled (``TEACHER``) from the dense baseline or the kept convnet.
- The 12 candidates (2 schedules x 3 teachers x 2 learning rates) are the same for ours and the
  peer; each picks its own on lenet300_100's validation accuracy (seed 0); lenet5 reuses that
  schedule and teacher and picks the learning rate on its own validation split. The chosen
  candidate is rerun with seeds 1 and 2 (fine-tuning order); accuracy targets are the mean over the 3.
- Structured: ``StructuredPrune(amount=0.5)`` on every conv group, ranking (L1 or BatchNorm scale)
  chosen on validation right after pruning, fine-tuned ``CONV_EPOCHS`` with augmentation (3 seeds);
  CPU latency at batch 1 and 256 (1 thread, median, on validation images) pruned and unpruned.

Writes ``benchmarks/results/pruning.json`` and the pruning section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from benchmarks.common import (  # noqa: E402
    CHECKPOINTS,
    ROOT,
    fine_tune,
    mean_std,
    publish,
    quick_subset,
    repo_path,
    targets_markdown,
)
from benchmarks.study import Goal, Study, kept_test_accuracy  # noqa: E402
from netshrink.codec.container import load, save  # noqa: E402
from netshrink.core import finalize_  # noqa: E402
from netshrink.core.selection import select, weight_name  # noqa: E402
from netshrink.data import load_dataset  # noqa: E402
from netshrink.distillation import Distill  # noqa: E402
from netshrink.measure import count_nonzero, count_parameters, dense_fp32_bytes, evaluate, measure_latency  # noqa: E402
from netshrink.prune import PRUNABLE_LAYERS, GradualPrune, MagnitudePrune, StructuredPrune, prune_  # noqa: E402
from netshrink.train import FitConfig, load_model  # noqa: E402

SPARSITY = 0.92  # of the Linear/Conv weights: 12.2-12.3x fewer nonzero parameters, biases included
EPOCHS = {"lenet300_100": 30, "lenet5": 15}
LRS = (0.01, 0.02)
TEACHER = Distill(T=4.0, alpha=0.9, cache_teacher=True)  # as in the Deep Compression recipes
GRADUAL = {"start": 0.0, "end": 0.5, "every": 100}  # GradualPrune's fractions of the run and step spacing
#: a candidate's teacher: None (the labels), the dense baseline itself, or the kept convnet (93% against
#: the LeNets' 90-92%)
TEACHERS = {"labels": None, "dense": "the dense original", "convnet": "the kept convnet"}
GRID = {"lenet300_100": {"schedule": ("gradual", "oneshot"), "teacher": tuple(TEACHERS), "lr": LRS},
        "lenet5": {"lr": LRS},  # schedule and teacher: lenet300_100's choice (per method)
        "convnet": {"ranking": ("l1", "bn")}}
METHODS = ("ours", "torch")
CONV_EPOCHS = 5
CONV_AMOUNT = 0.5
QUICK_SIZES = {"train": 600, "val": 300, "test": 300}
MODELS = ("lenet300_100", "lenet5")
GOALS = [goal for name in MODELS for goal in (
    Goal(f"{name}: fewer nonzero parameters (x)", ">=", 12.0, seeded=False),
    Goal(f"{name}: test accuracy below baseline (points)", "<=", 0.3),
    Goal(f"{name}: ours minus torch.nn.utils.prune peer, test accuracy (points)", ">=", 0.0))] + [
    Goal("convnet half channels: test accuracy below baseline (points)", "<=", 1.0),
    Goal("convnet half channels: speed-up at batch 256 (x)", ">=", 1.6, seeded=False),
    Goal("whole benchmark, stage time summed (min)", "<=", 60.0, seeded=False)]


def budget(quick: bool) -> dict:
    """Everything but the grid that is fixed before the run."""
    return {"epochs": {name: 1 for name in EPOCHS} if quick else EPOCHS, "conv_epochs": 1 if quick else CONV_EPOCHS,
            "sparsity": SPARSITY, "gradual": GRADUAL, "batch_size": 128, "lr_schedule": "cosine",
            "teacher": TEACHER.to_dict(), "conv_amount": CONV_AMOUNT, "threads": 1, "device": "cpu",
            "latency_repeats": {"batch_1": 5 if quick else 100, "batch_256": 3 if quick else 30},
            "data": QUICK_SIZES if quick else "fashion-mnist"}


class TorchGradualPrune(GradualPrune):
    """The peer's gradual schedule: at each of ``GradualPrune``'s pruning steps, one more
    ``torch.nn.utils.prune.global_unstructured`` (L1) call brings the same weights to the same sparsity."""

    def __init__(self, params: list[tuple[nn.Module, str]], **schedule) -> None:
        super().__init__(sparsity=SPARSITY, scope="global", **schedule)
        self.params = params

    def on_step_begin(self, model: nn.Module, info) -> None:
        from torch.nn.utils import prune as torch_prune

        target = self.sparsity_at(info)
        if target is None:
            return
        total = sum(getattr(m, n).numel() for m, n in self.params)
        pruned = sum(int((getattr(m, f"{n}_mask") == 0).sum()) for m, n in self.params if hasattr(m, f"{n}_mask"))
        more = round(target * total) - pruned  # global_unstructured counts among the weights still kept
        if more > 0:
            torch_prune.global_unstructured(self.params, pruning_method=torch_prune.L1Unstructured, amount=more)


def _fit_config(lr: float, epochs: int, seed: int, augment: bool = False) -> FitConfig:
    return FitConfig(epochs=epochs, lr=lr, batch_size=128, schedule="cosine", augment=augment, seed=seed)


def _per_layer(model: nn.Module) -> list[dict]:
    """Han et al. 2015 Table 1 form: each layer's weights and the % kept."""
    weights = {name: getattr(m, weight_name(m)) for name, m in select(model, kinds=PRUNABLE_LAYERS).items()}
    return [{"layer": name, "weights": w.numel(), "kept_pct": 100.0 * int(torch.count_nonzero(w)) / w.numel()}
            for name, w in weights.items()]


def _saved(model: nn.Module, path: Path, x: torch.Tensor) -> dict:
    """Save ``model`` as a .nsk at ``path``: its bytes and whether the file gives the same outputs."""
    save(model, path)
    model.eval()
    with torch.no_grad():
        same = torch.equal(model(x), load(path)(x))
    return {"nsk": repo_path(path),
            "nsk_bytes": path.stat().st_size, "loaded_outputs_equal": same}


def _teacher(name: str, teacher: str, root: Path) -> tuple[nn.Module | None, Path | None]:
    """The teacher module and the folder of its logit cache: the convnet's is shared by every
    candidate and model; the dense original's is each run's own."""
    if teacher == "labels":
        return None, None
    if teacher == "dense":
        return load_model(CHECKPOINTS / f"{name}.safetensors"), None
    return load_model(CHECKPOINTS / "convnet.safetensors"), root / "teacher-logits-convnet"


def candidate(name: str, method: str, schedule: str, teacher: str, lr: float, seed: int, data, root: Path,
              epochs: int) -> dict:
    """One pruned, fine-tuned ``name`` (validation only; saved as ``<root>/<key>.nsk``)."""
    from torch.nn.utils import prune as torch_prune

    model = load_model(CHECKPOINTS / f"{name}.safetensors")
    params = [(m, weight_name(m)) for m in select(model, kinds=PRUNABLE_LAYERS).values()]
    callbacks = []
    if schedule == "gradual":
        callbacks.append(GradualPrune(sparsity=SPARSITY, scope="global", **GRADUAL) if method == "ours"
                         else TorchGradualPrune(params, **GRADUAL))
    elif method == "ours":
        prune_(model, MagnitudePrune(sparsity=SPARSITY, scope="global"))
    else:
        torch_prune.global_unstructured(params, pruning_method=torch_prune.L1Unstructured, amount=SPARSITY)
    config = _fit_config(lr, epochs, seed)
    teacher_model, logits = _teacher(name, teacher, root)
    result = fine_tune(model, data, config, teacher_model, TEACHER, logits_dir=logits, callbacks=callbacks)
    if method == "ours":
        finalize_(model)
    else:
        for module, tensor_name in params:
            torch_prune.remove(module, tensor_name)
    params_count, nonzero = count_parameters(model), count_nonzero(model)
    return {"fit_config": config.to_dict(), "history": result.history, "val_acc": evaluate(model, data.val),
            "params": params_count, "nonzero": nonzero, "reduction": params_count / nonzero,
            "dense_fp32_bytes": dense_fp32_bytes(model), "per_layer": _per_layer(model),
            **_saved(model, root / f"{_key(name, method, schedule, teacher, lr, seed, epochs)}.nsk", data.val.x[:256])}


def _key(name: str, method: str, schedule: str, teacher: str, lr: float, seed: int, epochs: int) -> str:
    return f"{name}-{method}-{schedule}-{teacher}-lr{lr}-e{epochs}-s{seed}"


def prune_models(study: Study) -> tuple[dict, list[dict]]:
    """Ours and the peer on both LeNets: candidates, choices, seeds and test accuracy."""
    data, root, epochs = study.data, study.store.root, study.protocol["budget"]["epochs"]
    models, targets, chosen = {}, [], {}
    for name in MODELS:
        runs = {}
        for method in METHODS:
            label = f"{name} {method}"
            points = [{**chosen[method], **p} if name != "lenet300_100" else p for p in study.candidates(name)]

            def run(point: dict, seed: int, method=method, name=name) -> dict:
                key = _key(name, method, point["schedule"], point["teacher"], point["lr"], seed, epochs[name])
                return key, study.run(key, functools.partial(candidate, name, method, seed=seed, data=data, root=root,
                                                             epochs=epochs[name], **point))

            results = dict(run(point, 0) for point in points)
            best = study.choose(label, results)
            point = points[list(results).index(best)]
            chosen.setdefault(method, {k: point[k] for k in ("schedule", "teacher")})
            seeds = {0: results[best], **{seed: run(point, seed)[1] for seed in study.seeds[1:]}}
            test = study.test(label)
            runs[method] = {**results[best], "key": best, "point": point,
                            "val_acc_per_seed": {s: r["val_acc"] for s, r in seeds.items()},
                            "test_acc_per_seed": {s: kept_test_accuracy(r, test) for s, r in seeds.items()}}
        baseline = load_model(CHECKPOINTS / f"{name}.safetensors")
        base = {"val_acc": evaluate(baseline, data.val), "test_acc": evaluate(baseline, study.test(f"{name} ours")),
                "params": count_parameters(baseline), "nonzero": count_nonzero(baseline),
                "dense_fp32_bytes": dense_fp32_bytes(baseline)}
        models[name] = {"baseline": base, **runs}
        ours, peer = runs["ours"]["test_acc_per_seed"], runs["torch"]["test_acc_per_seed"]
        targets += [
            study.target(f"{name}: fewer nonzero parameters (x)", runs["ours"]["reduction"]),
            study.target(f"{name}: test accuracy below baseline (points)",
                         {s: 100 * (base["test_acc"] - acc) for s, acc in ours.items()}),
            study.target(f"{name}: ours minus torch.nn.utils.prune peer, test accuracy (points)",
                         {s: 100 * (ours[s] - peer[s]) for s in ours})]
    return models, targets


def _latency(model: nn.Module, x: torch.Tensor, repeats: dict) -> dict:
    return {f"batch_{b}": measure_latency(model, x.shape[1:], batch_size=b, threads=1, warmup=5, inputs=x,
                                          repeats=repeats[f"batch_{b}"])["median_ms"] for b in (1, 256)}


def _structurally_pruned(ranking: str) -> nn.Module:
    model = load_model(CHECKPOINTS / "convnet.safetensors")
    return prune_(model, StructuredPrune(amount=CONV_AMOUNT, ranking=ranking,
                                         filter_fn=lambda module, layer: isinstance(module, nn.Conv2d)))


def structured_run(ranking: str, seed: int, data, root: Path, epochs: int, repeats: dict) -> dict:
    """The half-width convnet fine-tuned with ``seed`` (latency with seed 0 only)."""
    model = _structurally_pruned(ranking)
    config = _fit_config(0.01, epochs, seed, augment=True)
    result = fine_tune(model, data, config)
    row = {"fit_config": config.to_dict(), "history": result.history, "val_acc": evaluate(model, data.val),
           "params": count_parameters(model),
           "conv_channels": {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)},
           **_saved(model, root / f"convnet-structured-{ranking}-e{epochs}-s{seed}.nsk", data.val.x[:256])}
    if seed == 0:
        baseline, x = load_model(CHECKPOINTS / "convnet.safetensors"), data.val.x
        latency = {"unpruned": _latency(baseline, x, repeats), "pruned": _latency(model, x, repeats)}
        latency["unpruned_again"] = _latency(baseline, x, repeats)  # bracket the pruned run
        base_ms = {b: min(latency["unpruned"][b], latency["unpruned_again"][b]) for b in latency["pruned"]}
        row.update(latency_ms=latency, speedup={b: base_ms[b] / latency["pruned"][b] for b in latency["pruned"]})
    return row


def structured(study: Study) -> tuple[dict, list[dict]]:
    data, root, budget_ = study.data, study.store.root, study.protocol["budget"]
    after_pruning = {f"convnet-structured-{p['ranking']}": study.run(
        f"convnet-structured-{p['ranking']}", lambda p=p: {"val_acc": evaluate(_structurally_pruned(p["ranking"]),
                                                                               data.val), **p})
        for p in study.candidates("convnet")}
    ranking = after_pruning[study.choose("convnet", after_pruning)]["ranking"]
    seeds = {seed: study.run(f"convnet-structured-{ranking}-e{budget_['conv_epochs']}-s{seed}", functools.partial(
        structured_run, ranking, seed, data, root, budget_["conv_epochs"], budget_["latency_repeats"]))
        for seed in study.seeds}
    baseline = load_model(CHECKPOINTS / "convnet.safetensors")
    test = study.test("convnet")
    conv = {**seeds[0], "ranking": ranking, "val_after_pruning": {r["ranking"]: r["val_acc"]
                                                                  for r in after_pruning.values()},
            "test_acc_per_seed": {s: kept_test_accuracy(r, test) for s, r in seeds.items()},
            "baseline_test_acc": evaluate(baseline, test), "baseline_params": count_parameters(baseline),
            "baseline_conv_channels": {n: m.out_channels for n, m in baseline.named_modules()
                                       if isinstance(m, nn.Conv2d)},
            "baseline_dense_fp32_bytes": dense_fp32_bytes(baseline)}
    return conv, [
        study.target("convnet half channels: test accuracy below baseline (points)",
                     {s: 100 * (conv["baseline_test_acc"] - acc) for s, acc in conv["test_acc_per_seed"].items()}),
        study.target("convnet half channels: speed-up at batch 256 (x)", conv["speedup"]["batch_256"])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fresh", action="store_true", help="recompute every run")
    parser.add_argument("--quick", action="store_true", help="tiny data, 1 epoch; only runs/pruning-quick/ is written")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)  # the CPU is shared: one thread per job avoids oversubscription
    data = load_dataset("fashion-mnist")
    if args.quick:
        data = quick_subset(data, QUICK_SIZES)
    study = Study("pruning", ROOT / "runs" / ("pruning-quick" if args.quick else "pruning"), data, grid=GRID,
                  budget=budget(args.quick), goals=GOALS, fresh=args.fresh)
    models, targets = prune_models(study)
    conv, conv_targets = structured(study)
    targets += [*conv_targets, study.target("whole benchmark, stage time summed (min)", study.minutes())]
    notes = ("Latency: 1 thread, median, on validation images; on a CPU shared with other jobs, so absolute times are "
             "noisy: the unpruned model is timed before and after the pruned one and the faster of the two is the "
             "reference. Time: every kept run's seconds, summed (runs made by earlier sessions included).")
    doc = study.doc({"sparsity": SPARSITY, "models": models, "convnet_structured": conv,
                     "run_seconds": study.store.seconds}, targets, notes=notes, quick=args.quick)
    if args.quick:
        print(markdown(doc))
    else:
        publish("pruning", doc, markdown)


def markdown(doc: dict) -> str:
    """The pruning section of BENCHMARKS.md, from the results file alone (published under the
    Study protocol; the renderer of the file before it went with its last figures, 2026-12-04)."""
    m, protocol = doc["measurements"], doc["protocol"]
    seeds = len(protocol["seeds"])
    lines = ["## Pruning (Fashion-MNIST)", "",
             f"`python benchmarks/pruning.py{' --quick' if doc.get('quick') else ''}`. Global magnitude pruning to "
             f"{m['sparsity']:.0%} of the Linear/Conv weights from the kept baselines, ours against "
             "`torch.nn.utils.prune.global_unstructured` (L1) on the same schedule (gradual: the same cubic steps, "
             "or one shot), teachers and learning rates: 12 candidates each, chosen on lenet300_100's validation "
             "accuracy (lenet5: the learning rate on its own), the choice rerun with "
             f"{seeds} seeds; test accuracy as mean ± std over them. Validation accuracy of every candidate: "
             + "; ".join(f"{key} {100 * acc:.2f}%" for choice in protocol["choices"].values()
                         for key, acc in choice["validation"].items()) + ".", "",
             "| model | baseline | ours | ours, test | peer | peer, test | nonzero (ours / peer) | .nsk bytes (ours) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, runs in m["models"].items():
        ours, peer = runs["ours"], runs["torch"]
        what = [f"{r['point'].get('schedule', '')}, {r['point'].get('teacher', '')}, lr {r['point']['lr']}, "
                f"{r['fit_config']['epochs']} epochs" for r in (ours, peer)]
        lines.append(f"| {name} | {100 * runs['baseline']['test_acc']:.2f}% | {what[0]} | "
                     f"{mean_std(ours['test_acc_per_seed'])} | {what[1]} | {mean_std(peer['test_acc_per_seed'])} | "
                     f"{ours['nonzero']:,} / {peer['nonzero']:,} of {ours['params']:,} | {ours['nsk_bytes']:,} |")
    lines += ["", "Weights kept per layer (ours; Han et al. 2015 Table 1 form):", "",
              "| model | layer | weights | kept |", "|---|---|---|---|"]
    for name, runs in m["models"].items():
        lines += [f"| {name} | {row['layer']} | {row['weights']:,} | {row['kept_pct']:.1f}% |"
                  for row in runs["ours"]["per_layer"]]
    c = m["convnet_structured"]
    lat = c["latency_ms"]
    lines += ["", f"Structured: convnet with half of every conv layer's channels removed (ranking {c['ranking']}, "
              f"chosen on validation), fine-tuned {c['fit_config']['epochs']} epochs: test "
              f"{mean_std(c['test_acc_per_seed'])} (baseline {100 * c['baseline_test_acc']:.2f}%), "
              f"{c['params']:,} parameters (baseline {c['baseline_params']:,}), .nsk {c['nsk_bytes']:,} B "
              f"(baseline dense fp32 {c['baseline_dense_fp32_bytes']:,} B).", "",
              "| latency, 1 thread (ms) | unpruned | unpruned, again | pruned | speed-up |", "|---|---|---|---|---|"]
    lines += [f"| {b.replace('_', ' ')} | {lat['unpruned'][b]:.2f} | {lat['unpruned_again'][b]:.2f} | "
              f"{lat['pruned'][b]:.2f} | {c['speedup'][b]:.2f}x |" for b in ("batch_1", "batch_256")]
    return "\n".join([*lines, "", targets_markdown(doc["targets"])])


if __name__ == "__main__":
    main()
