"""Quantization benchmark: accuracy against bits, weight clustering, binary weights, 1-D k-means
speed, and ONNX Runtime int8 against fp32, on Fashion-MNIST from the kept baseline checkpoints.

    python benchmarks/quantization.py            # about 25 minutes of CPU time on 2 cores

Each stage writes the results file and the BENCHMARKS.md section when it ends, so a run cut short
keeps what it measured (``"complete": false``). A single cell is never rerun into an existing results
file (issue 20: a budget widened after a test miss); the ``"reruns"`` an earlier version recorded
still render.


- Accuracy against bits (8, 6, 5, 4, 3, 2) for lenet300_100 and lenet5 (Han et al. 2016, "Deep
  Compression", Figure 8's setting): uniform post-training quantization (per-tensor symmetric
  grid, MSE-optimal clipping), uniform quantization-aware training, clustering post-training
  (linear initialisation, section 3.2) and clustering with centroid fine-tuning (section 3.3).
  Training runs are ``TRAIN_EPOCHS`` epoch(s) of ``fit()`` over a fixed random ``TRAIN_IMAGES``
  of the training images (the CPU is shared); the two learning rates were chosen on lenet300_100's
  validation split (test accuracy is only reported). The 4-bit fine-tuned-centroid cell (the
  target) has a larger budget, the same for both models: ``CENTROID_4BIT_EPOCHS`` epochs over the
  whole training split, lr picked per model on its validation split among ``CENTROID_4BIT_LRS``,
  each trained on the labels alone and distilled from the fp32 model (``CENTROID_4BIT_DISTILL``).
  Every model is finalized and saved, and its file size recorded.
- Conv against fc (section 6.1): lenet5 with only its conv layers clustered (fc layers fp32), and
  only its fc layers clustered, at each bit width, post-training.
- Binary weights: BWN (XNOR-Net's scaled signs) on lenet5 with the first and last layers in full
  precision, ``BWN_EPOCHS`` epochs of training; bytes of the binarized layers in the saved file
  (``netshrink.codec.inspect``) against their dense fp32 bytes.
- 1-D k-means speed: 32 centroids over 1M real weights (every weight matrix of the three kept
  checkpoints, concatenated and tiled to 1M as the codec benchmark does), ours (density and linear
  initialisation, then Lloyd; the exact Ckmeans.1d.dp is left out: minutes at 1M) against scikit-learn's
  ``KMeans(n_clusters=32, n_init=1)`` in the same run: both on the float32 weights, both on the same
  threads, both warmed by an untimed run, median of 3; inertia of each computed the same way.
- ONNX Runtime int8 (static, QDQ, per-channel weights, activations calibrated on 512 validation
  images) against fp32 ONNX Runtime on lenet5 and convnet: test accuracy and median latency at
  batch 1 and 256 with one thread.

Targets (issue 8): clustering with fine-tuning at 4 bits at most 0.3 points below fp32 on both
models; BWN lenet5 at most 2 points below fp32 and its binarized layers at least 25x smaller than
fp32; our k-means at least 10x faster than scikit-learn with inertia no worse; the whole run within
60 minutes. Writes ``benchmarks/results/quantization.json``, ``benchmarks/results/quantization.png``
and the quantization section of BENCHMARKS.md.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

import netshrink
from benchmarks.common import (
    CHECKPOINTS,
    RESULTS,
    fine_tune,
    publish,
    results_doc,
    target,
    targets_markdown,
)
from netshrink.codec.inspect import inspect_file
from netshrink.distillation import Distill
from netshrink.measure import evaluate
from netshrink.quant import Binarize, Cluster, Quantize, kmeans_1d
from netshrink.quant.onnx_export import export_onnx, onnx_accuracy, onnx_latency_ms, quantize_onnx_int8
from netshrink.train import FitConfig, fit, load_model

MODELS = ("lenet300_100", "lenet5")
BITS = (8, 6, 5, 4, 3, 2)
TRAIN_IMAGES = 12_000  # training runs see a fixed random subset of the training split (shared CPU budget)
TRAIN_EPOCHS = 1
# learning rates chosen on lenet300_100's validation split among 1e-4, 3e-4 and 1e-3 (4 bits, one epoch)
QAT_TRAIN = FitConfig(epochs=TRAIN_EPOCHS, batch_size=128, lr=3e-4, optimizer="adam", weight_decay=0.0, seed=0)
CENTROID_TRAIN = FitConfig(epochs=TRAIN_EPOCHS, batch_size=128, lr=1e-3, optimizer="adam", weight_decay=0.0, seed=0)
# the target's cell (4 bits, cluster + fine-tuned centroids), both models: whole training split, more epochs
CENTROID_4BIT_EPOCHS = 8
CENTROID_4BIT_LRS = (1e-3, 3e-4)  # picked per model on its validation split, with or without the teacher
CENTROID_4BIT_DISTILL = Distill(T=4.0, alpha=0.9, cache_teacher=True)  # as in the Deep Compression recipes
CENTROID_4BIT_TRAIN = FitConfig(epochs=CENTROID_4BIT_EPOCHS, batch_size=128, lr=CENTROID_TRAIN.lr, optimizer="adam",
                                weight_decay=0.0, seed=0)
BWN_EPOCHS = 3
BWN_TRAIN = FitConfig(epochs=BWN_EPOCHS, batch_size=128, lr=1e-3, optimizer="adam", weight_decay=0.0, seed=0)
KMEANS_WEIGHTS = 1_000_000
KMEANS_CLUSTERS = 32
ONNX_MODELS = ("lenet5", "convnet")
CALIBRATION_IMAGES = 512
THREADS = 1
CONV = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)


def checkpoint(name: str) -> torch.nn.Module:
    return load_model(CHECKPOINTS / f"{name}.safetensors")


def training_subset(data):
    """``data`` whose training split is ``TRAIN_IMAGES`` images drawn once with a fixed seed."""
    import dataclasses

    keep = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))[:TRAIN_IMAGES]
    return dataclasses.replace(data, train=dataclasses.replace(data.train, x=data.train.x[keep], y=data.train.y[keep]))


def measured(model: torch.nn.Module, data, folder: Path, tag: str) -> dict:
    """Finalize, save and reload ``model``; test accuracy of the reloaded model and its file bytes."""
    netshrink.finalize_(model)
    path = folder / f"{tag}.nsk"
    netshrink.save(model, path)
    return {"test_acc": evaluate(netshrink.load(path), data.test), "file_bytes": path.stat().st_size}


def centroids_4bit(name: str, data, folder: Path) -> dict:
    """4-bit clustering with centroids fine-tuned on the whole training split (the target's cell).

    The fine-tuning is picked on this model's validation split among the ``CENTROID_4BIT_LRS``,
    each on the hard labels alone and distilled from the fp32 model itself (Hinton et al. 2015,
    ``CENTROID_4BIT_DISTILL``; Mishra & Marr 2018 train low-precision networks the same way)."""
    import dataclasses

    start = time.perf_counter()
    candidates = {}
    with tempfile.TemporaryDirectory() as logits:  # the fp32 teacher's logits, computed once
        for lr in CENTROID_4BIT_LRS:
            for teacher in ("labels", "fp32 teacher"):
                model = checkpoint(name)
                netshrink.apply_(model, Cluster(bits=4, init="linear"))
                result = fine_tune(model, data, dataclasses.replace(CENTROID_4BIT_TRAIN, lr=lr),
                                   None if teacher == "labels" else checkpoint(name), CENTROID_4BIT_DISTILL, logits)
                tag = f"{name}-cluster + fine-tuned centroids-4-lr{lr:g}-{teacher.replace(' ', '-')}"
                candidates[(lr, teacher)] = {**measured(model, data, folder, tag), "val_acc": result.val_acc,
                                             "lr": lr, "trained_on": teacher}
    best = max(candidates, key=lambda key: candidates[key]["val_acc"])
    row = {**candidates[best],
           "validation_of_candidates": {f"lr {lr:g}, {teacher}": c["val_acc"]
                                        for (lr, teacher), c in candidates.items()},
           "seconds": time.perf_counter() - start, "train_images": len(data.train), "epochs": CENTROID_4BIT_EPOCHS}
    print(f"{name} cluster + fine-tuned centroids 4 bits (whole split): {row}", flush=True)
    return row


def bits_sweep(name: str, data, train_data, folder: Path) -> dict:
    """Every method at every bit width on one model, plus the fp32 baseline."""
    rows = {"fp32": measured(checkpoint(name), data, folder, f"{name}-fp32")}
    methods = {
        "uniform PTQ": (lambda b: Quantize(bits=b, calibration="mse"), None),
        "uniform QAT": (lambda b: Quantize(bits=b, calibration="mse"), QAT_TRAIN),
        "cluster": (lambda b: Cluster(bits=b, init="linear"), None),
        "cluster + fine-tuned centroids": (lambda b: Cluster(bits=b, init="linear"), CENTROID_TRAIN),
    }
    for method, (make, train) in methods.items():
        rows[method] = {}
        for bits in BITS:
            if train is CENTROID_TRAIN and bits == 4:
                rows[method][str(bits)] = centroids_4bit(name, data, folder)
                continue
            start = time.perf_counter()
            model = checkpoint(name)
            netshrink.apply_(model, make(bits))
            if train is not None:
                fit(model, train_data, train, progress=False)
            rows[method][str(bits)] = {**measured(model, data, folder, f"{name}-{method}-{bits}"),
                                       "seconds": time.perf_counter() - start}
            print(f"{name} {method} {bits} bits: {rows[method][str(bits)]}", flush=True)
    return rows


def conv_against_fc(data, folder: Path) -> dict:
    """lenet5 with only its conv layers, or only its fc layers, clustered post-training."""
    rows = {}
    for part, accept in (("conv only", lambda m, n: isinstance(m, CONV)),
                         ("fc only", lambda m, n: isinstance(m, torch.nn.Linear))):
        rows[part] = {}
        for bits in BITS:
            model = checkpoint("lenet5")
            netshrink.apply_(model, Cluster(bits=bits, init="linear", filter_fn=accept))
            rows[part][str(bits)] = measured(model, data, folder, f"lenet5-{part}-{bits}")
    return rows


def binary_weights(data, train_data, folder: Path) -> dict:
    """BWN lenet5, first and last layers in full precision."""
    start = time.perf_counter()
    model = checkpoint("lenet5")
    netshrink.apply_(model, Binarize(method="bwn"))
    binarized = netshrink.get_log(model)[-1]["layers"]
    fit(model, train_data, BWN_TRAIN, progress=False)
    result = measured(model, data, folder, "lenet5-bwn")
    result["fp32_test_acc"] = evaluate(checkpoint("lenet5"), data.test)
    rows = {row["name"]: row for row in inspect_file(folder / "lenet5-bwn.nsk")}
    layers = {name: rows[f"{name}.weight"] for name in binarized}
    stored = sum(row["bytes"] for row in layers.values())
    dense = sum(row["dense_fp32_bytes"] for row in layers.values())
    return {**result, "binarized_layers": {n: {k: r[k] for k in ("encoding", "bytes", "dense_fp32_bytes")}
                                           for n, r in layers.items()},
            "binarized_bytes": stored, "binarized_dense_fp32_bytes": dense, "binarized_rate": dense / stored,
            "seconds": time.perf_counter() - start}


def real_weights(count: int) -> tuple[np.ndarray, int]:
    """Every weight matrix of the kept checkpoints, concatenated and tiled (or cut) to ``count``."""
    from safetensors.numpy import load_file

    parts = []
    for name in ("lenet300_100", "lenet5", "convnet"):
        state = load_file(str(CHECKPOINTS / f"{name}.safetensors"))
        parts += [state[key].ravel() for key in sorted(state) if state[key].ndim >= 2]
    base = np.concatenate(parts).astype(np.float32)
    return np.resize(base, count), int(base.size)


def _inertia(values: np.ndarray, centroids: np.ndarray) -> float:
    """Squared error of ``values`` to their nearest centroid, in float64 (the same for both sides)."""
    centres = np.sort(np.asarray(centroids, dtype=np.float64).ravel())
    inner = (centres[1:] + centres[:-1]) / 2
    nearest = centres[np.searchsorted(inner, values.astype(np.float64))]
    return float(((values.astype(np.float64) - nearest) ** 2).sum())


def kmeans_speed() -> dict:
    """Our 1-D k-means against scikit-learn's KMeans on the same 1M float32 weights: both warmed by
    one untimed run, both limited to ``THREADS`` threads (threadpoolctl for scikit-learn's OpenMP and
    BLAS), median of 3 timed runs each; inertia computed the same way for both."""
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    values, distinct_source = real_weights(KMEANS_WEIGHTS)  # float32, the weights' own dtype
    sides = {f"ours ({init})": (lambda init=init: kmeans_1d(values, KMEANS_CLUSTERS, init=init))
             for init in ("density", "linear")}
    sides["scikit-learn KMeans(n_clusters=32, n_init=1)"] = lambda: KMeans(
        n_clusters=KMEANS_CLUSTERS, n_init=1, random_state=0).fit(values.reshape(-1, 1))
    rows = {}
    with threadpool_limits(limits=THREADS):
        for name, run in sides.items():
            run()  # warm-up, untimed
            times = []
            for _ in range(3):
                start = time.perf_counter()
                result = run()
                times.append(time.perf_counter() - start)
            ours = hasattr(result, "steps")
            rows[name] = {"seconds": statistics.median(times), "runs": 3,
                          "inertia": _inertia(values, result.centroids if ours else result.cluster_centers_),
                          "lloyd_steps": int(result.steps if ours else result.n_iter_)}
    return {"weights": KMEANS_WEIGHTS, "source_weights": distinct_source, "clusters": KMEANS_CLUSTERS, "runs": rows,
            "dtype": str(values.dtype), "threads": THREADS, "warm": True}


def onnx_int8(data, folder: Path) -> dict:
    """fp32 and int8 ONNX Runtime: test accuracy and latency at batch 1 and 256."""
    rows = {}
    for name in ONNX_MODELS:
        model = checkpoint(name).eval()
        fp32, int8 = folder / f"{name}.onnx", folder / f"{name}.int8.onnx"
        difference = export_onnx(model, fp32, data.test.x[:256])
        quantize_onnx_int8(fp32, int8, data.val.x[:CALIBRATION_IMAGES])
        row = {"fp32_vs_pytorch_max_abs_diff": difference, "pytorch_test_acc": evaluate(model, data.test)}
        for kind, path in (("fp32", fp32), ("int8", int8)):
            row[kind] = {"test_acc": onnx_accuracy(path, data.test.x, data.test.y), "file_bytes": path.stat().st_size,
                         **{f"batch_{b}_ms": onnx_latency_ms(path, data.test.x[:b], threads=THREADS) for b in (1, 256)}}
        row["accuracy_change_points"] = 100 * (row["int8"]["test_acc"] - row["fp32"]["test_acc"])
        row["latency_ratio_fp32_over_int8"] = {b: row["fp32"][f"batch_{b}_ms"] / row["int8"][f"batch_{b}_ms"]
                                               for b in (1, 256)}
        rows[name] = row
        print(f"onnx {name}: {row}", flush=True)
    return rows


def plot(sweeps: dict, conv_fc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(sweeps), figsize=(6 * len(sweeps), 4.2), squeeze=False)
    for ax, (name, rows) in zip(axes[0], sweeps.items(), strict=True):
        ax.axhline(100 * rows["fp32"]["test_acc"], color="black", linestyle=":", label="fp32")
        for method, by_bits in rows.items():
            if method != "fp32":
                ax.plot(BITS, [100 * by_bits[str(b)]["test_acc"] for b in BITS], marker="o", label=method)
        if name == "lenet5":
            for part, by_bits in conv_fc.items():
                ax.plot(BITS, [100 * by_bits[str(b)]["test_acc"] for b in BITS], linestyle="--",
                        label=f"cluster, {part}")
        ax.set(title=f"{name} on Fashion-MNIST", xlabel="bits per weight", ylabel="test accuracy (%)")
        ax.invert_xaxis()
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _bits(by_method: dict) -> list[str]:
    """The bit widths a table's columns hold, as its rows key them."""
    return list(next(iter(by_method.values())))


def markdown(doc: dict) -> str:
    """The quantization section of BENCHMARKS.md, from the results file alone."""
    m, fine = doc["measurements"], doc["centroid_4bit_train_config"]
    distill = fine["distill_candidate"]
    lines = ["## quantization", "",
             "`python benchmarks/quantization.py` (Fashion-MNIST, kept checkpoints; test accuracy in %, files are "
             f"finalized `.nsk`; training runs are {doc['qat_train_config']['epochs']} epoch(s) of Adam over a fixed "
             f"random {doc['train_images']:,} training images, lr {doc['qat_train_config']['lr']:g} for QAT and "
             f"{doc['centroid_train_config']['lr']:g} for centroids, "
             "chosen on lenet300_100's validation split; the 4-bit fine-tuned-centroid cell of both models, "
             "the target, "
             f"is {fine['epochs']} epochs over the whole training split, lr picked per model on its validation "
             f"split among {', '.join(f'{lr:g}' for lr in fine['lr'])}, each on the labels alone and distilled "
             f"from the fp32 model, T {distill['T']:g}, alpha {distill['alpha']:g}). "
             "Raw numbers: `benchmarks/results/quantization.json`; plot: `benchmarks/results/quantization.png`.", ""]
    if not doc["complete"]:
        lines += ["**Partial run**: the stages below are the ones that finished.", ""]
    for rerun in m.get("reruns", []):
        lines += [f"**Rerun** `{rerun['command']}` on {rerun['date']} ({rerun['seconds']:.0f} s): only "
                  f"{rerun['what']}; every other figure is from the full run; the whole-benchmark wall time is "
                  "the full run's plus the rerun's.", ""]
    for name, rows in m.get("bits_sweep", {}).items():
        methods = {method: by_bits for method, by_bits in rows.items() if method != "fp32"}
        bits = _bits(methods)
        lines += [f"**{name}** (fp32: {100 * rows['fp32']['test_acc']:.2f}%, {rows['fp32']['file_bytes']:,} B)", "",
                  "| method | " + " | ".join(f"{b} bits" for b in bits) + " |", "|---" * (len(bits) + 1) + "|"]
        for method, by_bits in methods.items():
            lines.append(f"| {method} | " + " | ".join(
                f"{100 * by_bits[b]['test_acc']:.2f} ({by_bits[b]['file_bytes'] / 1024:.0f} KiB)" for b in bits) + " |")
        lines.append("")
    if "conv_against_fc" in m:
        bits = _bits(m["conv_against_fc"])
        lines += ["**Conv against fc layers** (lenet5, clustering post-training, the other layers fp32; Deep "
                  "Compression 6.1)", "", "| layers clustered | " + " | ".join(f"{b} bits" for b in bits) + " |",
                  "|---" * (len(bits) + 1) + "|"]
        for part, by_bits in m["conv_against_fc"].items():
            lines.append(f"| {part} | " + " | ".join(f"{100 * by_bits[b]['test_acc']:.2f}" for b in bits) + " |")
        lines.append("")
    if "binary_weights" in m:
        bwn = m["binary_weights"]
        lines += [f"**BWN lenet5** (first and last layers fp32, {doc['bwn_train_config']['epochs']} epochs): test "
                  f"{100 * bwn['test_acc']:.2f}% (fp32 {100 * bwn['fp32_test_acc']:.2f}%), binarized layers "
                  f"{bwn['binarized_bytes']:,} B against {bwn['binarized_dense_fp32_bytes']:,} B fp32 "
                  f"({bwn['binarized_rate']:.1f}x), file {bwn['file_bytes']:,} B.", ""]
    if "kmeans_speed" in m:
        km = m["kmeans_speed"]
        lines += [f"**1-D k-means**, {km['clusters']} clusters over {km['weights']:,} real weights:", "",
                  "| implementation | seconds | inertia | Lloyd steps |", "|---|---|---|---|"]
        for impl, row in km["runs"].items():
            lines.append(f"| {impl} | {row['seconds']:.3f} | {row['inertia']:.6g} | {row['lloyd_steps']} |")
        if km.get("warm"):  # measured since issue 20; before, scikit-learn ran once, cold, on float64
            lines += ["", f"Both sides {km['dtype']}, {km['threads']} thread, warmed by one untimed run, median of "
                      f"{km['runs']['ours (density)']['runs']} runs."]
        lines.append("")
    if "onnx_int8" in m:
        lines += [f"**ONNX Runtime int8 against fp32** ({doc['threads']} thread, median latency):", "",
                  "| model | fp32 acc | int8 acc | change (points) | batch 1 fp32 / int8 ms "
                  "| batch 256 fp32 / int8 ms |",
                  "|---|---|---|---|---|---|"]
        for name, row in m["onnx_int8"].items():
            lines.append(f"| {name} | {100 * row['fp32']['test_acc']:.2f} | {100 * row['int8']['test_acc']:.2f} | "
                         f"{row['accuracy_change_points']:+.2f} | {row['fp32']['batch_1_ms']:.3f} / "
                         f"{row['int8']['batch_1_ms']:.3f} | {row['fp32']['batch_256_ms']:.2f} / "
                         f"{row['int8']['batch_256_ms']:.2f} |")
        lines.append("")
    lines.append(targets_markdown(doc["targets"]))
    return "\n".join(lines)


def compute_targets(doc: dict, wall: float, complete: bool) -> list[dict]:
    """The issue's targets over what has been measured so far."""
    targets = []
    sweeps, bwn = doc.get("bits_sweep", {}), doc.get("binary_weights")
    for name in sweeps:
        targets.append(target(f"{name}: 4-bit clustering + fine-tuned centroids, points below fp32",
                              100 * (sweeps[name]["fp32"]["test_acc"]
                                     - sweeps[name]["cluster + fine-tuned centroids"]["4"]["test_acc"]), 0.3, "<="))
    if bwn is not None:
        targets += [target("lenet5 BWN (first/last fp32): points below fp32",
                           100 * (bwn["fp32_test_acc"] - bwn["test_acc"]), 2.0, "<="),
                    target("lenet5 BWN: binarized layers' fp32 bytes / stored bytes", bwn["binarized_rate"], 25.0,
                           ">=")]
    if "kmeans_speed" in doc:
        km = doc["kmeans_speed"]["runs"]
        sklearn = km["scikit-learn KMeans(n_clusters=32, n_init=1)"]
        targets += [target("1-D k-means (density init) speed-up over scikit-learn KMeans, 1M weights",
                           sklearn["seconds"] / km["ours (density)"]["seconds"], 10.0, ">="),
                    target("1-D k-means (density init) inertia / scikit-learn's",
                           km["ours (density)"]["inertia"] / sklearn["inertia"], 1.0, "<=")]
    if complete:
        targets.append(target("whole benchmark wall time (s)", wall, 3600.0, "<="))
    return targets


def _now() -> str:
    import datetime

    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def publish_run(doc: dict, began: str, start: float, complete: bool, wall: float | None = None) -> list[dict]:
    """Publish the measurements ``doc`` so far of the run that began at ``began`` (one history entry
    per run, however often it publishes) and return its targets."""
    wall = time.perf_counter() - start if wall is None else wall
    targets = compute_targets(doc, wall, complete)
    publish("quantization", results_doc(
        "quantization", doc, targets, date=began, complete=complete, wall_seconds=wall, device="cpu",
        threads=THREADS, train_images=TRAIN_IMAGES, qat_train_config=QAT_TRAIN.to_dict(),
        centroid_train_config=CENTROID_TRAIN.to_dict(), centroid_4bit_train_images="whole training split",
        centroid_4bit_train_config={**CENTROID_4BIT_TRAIN.to_dict(), "lr": list(CENTROID_4BIT_LRS),
                                    "distill_candidate": CENTROID_4BIT_DISTILL.to_dict()},
        bwn_train_config=BWN_TRAIN.to_dict()), markdown)
    return targets


def main() -> None:
    if sys.argv[1:]:
        raise SystemExit("usage: quantization.py")
    start, began = time.perf_counter(), _now()
    torch.set_num_threads(THREADS)
    data = netshrink.load_dataset("fashion-mnist")
    train_data = training_subset(data)
    doc: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        stages = [
            ("kmeans_speed", kmeans_speed),
            ("bits_sweep", lambda: {}),
            *((f"bits_sweep.{name}", lambda name=name: bits_sweep(name, data, train_data, folder)) for name in MODELS),
            ("binary_weights", lambda: binary_weights(data, train_data, folder)),
            ("conv_against_fc", lambda: conv_against_fc(data, folder)),
            ("onnx_int8", lambda: onnx_int8(data, folder)),
        ]
        for key, stage in stages:
            if "." in key:
                outer, inner = key.split(".")
                doc[outer][inner] = stage()
            else:
                doc[key] = stage()
            print(f"{key} done at {time.perf_counter() - start:.0f} s", flush=True)
            publish_run(doc, began, start, complete=False)
    plot(doc["bits_sweep"], doc["conv_against_fc"], RESULTS / "quantization.png")
    doc["full_run_wall_seconds"] = time.perf_counter() - start
    print(targets_markdown(publish_run(doc, began, start, complete=True, wall=doc["full_run_wall_seconds"])))


if __name__ == "__main__":
    main()
