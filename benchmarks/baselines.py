"""Baselines: train the three zoo models on Fashion-MNIST, then measure them on this CPU.

    python benchmarks/baselines.py                   # train here, then measure
    python benchmarks/baselines.py --stage train --device cuda   # train on a GPU machine
    python benchmarks/baselines.py --stage measure   # measure kept checkpoints on this CPU

Writes ``benchmarks/checkpoints/<model>.safetensors`` (the weights every later benchmark starts
from) with their training record ``benchmarks/checkpoints/training.json``,
``benchmarks/results/baselines.json`` and the baselines section of BENCHMARKS.md.
Targets (issue: foundation): test accuracy lenet300_100 >= 89.0%, lenet5 >= 90.5%, convnet >= 92.5%.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks.common import (  # noqa: E402
    CHECKPOINTS,
    publish,
    results_doc,
    target,
    targets_markdown,
)
from netshrink.core.files import write_atomically

RECIPES = {
    "lenet300_100": {"epochs": 30, "lr": 0.05, "batch_size": 128, "augment": False},
    "lenet5": {"epochs": 20, "lr": 0.05, "batch_size": 128, "augment": False},
    "convnet": {"epochs": 12, "lr": 0.05, "batch_size": 128, "augment": True},
}
TARGETS = {"lenet300_100": 0.890, "lenet5": 0.905, "convnet": 0.925}
TRAINING_LOG = CHECKPOINTS / "training.json"  # how each kept checkpoint was trained


def _model_kwargs(name: str, data) -> dict:
    if name == "lenet300_100":
        return {"in_features": int(data.train.x[0].numel()), "num_classes": data.num_classes}
    return {"input_shape": list(data.input_shape), "num_classes": data.num_classes}


def train(models: list[str], device: str, data_dir: str | None) -> None:
    from netshrink.data import load_dataset
    from netshrink.measure import evaluate
    from netshrink.models import create
    from netshrink.train import FitConfig, fit, save_model

    data = load_dataset("fashion-mnist", data_dir=data_dir)
    log = json.loads(TRAINING_LOG.read_text()) if TRAINING_LOG.exists() else {}
    CHECKPOINTS.mkdir(parents=True, exist_ok=True)
    for name in models:
        torch.manual_seed(0)
        model = create(name, **_model_kwargs(name, data))
        config = FitConfig(seed=0, **RECIPES[name])
        start = time.perf_counter()
        result = fit(model, data, config, device=device, progress=sys.stderr.isatty())
        seconds = time.perf_counter() - start
        trained = result.model.cpu()
        save_model(CHECKPOINTS / f"{name}.safetensors", trained)
        log[name] = {
            "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
            "torch": torch.__version__, "train_seconds": seconds, "fit_config": config.to_dict(),
            "val_acc": result.val_acc, "history": result.history,
            "test_acc_at_training": evaluate(trained, data.test),
        }
        print(f"{name}: val {result.val_acc:.4f} test {log[name]['test_acc_at_training']:.4f} "
              f"in {seconds:.0f} s on {log[name]['device']}", flush=True)
    write_atomically(TRAINING_LOG, (json.dumps(log, indent=2) + "\n").encode())


def measure(models: list[str], data_dir: str | None) -> None:
    from netshrink.data import load_dataset
    from netshrink.measure import measure_model
    from netshrink.train import load_model

    data = load_dataset("fashion-mnist", data_dir=data_dir)
    training = json.loads(TRAINING_LOG.read_text()) if TRAINING_LOG.exists() else {}
    results, targets = {}, []
    for name in models:
        path = CHECKPOINTS / f"{name}.safetensors"
        model = load_model(path)
        row = measure_model(model, data.input_shape, data.test, threads=1)
        row["latency_2_threads"] = measure_model(model, data.input_shape, threads=2,
                                                 latency_batches=(256,))["latency"]
        row["checkpoint_bytes"] = path.stat().st_size
        row["training"] = {k: v for k, v in training.get(name, {}).items() if k != "history"}
        results[name] = row
        targets.append(target(f"{name} test accuracy", row["accuracy"], TARGETS[name], ">="))
        print(f"{name}: test {row['accuracy']:.4f}", flush=True)
    publish("baselines", results_doc("baselines", results, targets), markdown)


def markdown(doc: dict) -> str:
    """The baselines section of BENCHMARKS.md, from the results file alone."""
    results, targets = doc["measurements"], doc["targets"]
    lines = [
        "## Baselines (Fashion-MNIST)",
        "",
        "`python benchmarks/baselines.py` (training) and `--stage measure` (measurement on this "
        "CPU). Latency: median of repeated runs after warm-up, 1 thread unless noted.",
        "",
        "| model | test acc | params | MACs | dense fp32 file (B) | batch 1 (ms) | batch 256 (ms) | "
        "batch 256, 2 threads (ms) | trained on | train time (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lat = r["latency"]
        t = r["training"]
        lines.append(
            f"| {name} | {r['accuracy'] * 100:.2f}% | {r['params']:,} | {r['macs']:,} | "
            f"{r['dense_fp32_bytes']:,} | {lat['batch_1']['median_ms']:.3f} | "
            f"{lat['batch_256']['median_ms']:.2f} | "
            f"{r['latency_2_threads']['batch_256']['median_ms']:.2f} | {t.get('device', '?')} | "
            f"{t.get('train_seconds', float('nan')):.0f} |")
    lines += ["", targets_markdown(targets), "",
              "Published reference (Fashion-MNIST README): MLP 256-128-64 0.900, two-conv CNNs "
              "0.876-0.925, ResNet-18 0.949."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stage", choices=["all", "train", "measure"], default="all")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    if args.stage in ("all", "train"):
        train(args.models, args.device, args.data_dir)
    if args.stage in ("all", "measure"):
        measure(args.models, args.data_dir)


if __name__ == "__main__":
    main()
