"""Quantization benchmark: accuracy against bits, weight clustering, binary weights, 1-D k-means
speed, and ONNX Runtime int8 against fp32, on Fashion-MNIST from the kept baseline checkpoints.

    python benchmarks/quantization.py            # about 30 minutes on 2 CPU cores

- Accuracy against bits (8, 6, 5, 4, 3, 2) for lenet300_100 and lenet5 (Han et al. 2016, "Deep
  Compression", Figure 8's setting): uniform post-training quantization (per-tensor symmetric
  grid, MSE-optimal clipping), uniform quantization-aware training, clustering post-training
  (linear initialisation, section 3.2) and clustering with centroid fine-tuning (section 3.3).
  Training runs are ``TRAIN_EPOCHS`` epochs of ``fit()`` with the hyperparameters below, fixed in
  advance (nothing is tuned; test accuracy is only reported). Every model is finalized and saved,
  and its file size recorded.
- Conv against fc (section 6.1): lenet5 with only its conv layers clustered (fc layers fp32), and
  only its fc layers clustered, at each bit width, post-training.
- Binary weights: BWN (XNOR-Net's scaled signs) on lenet5 with the first and last layers in full
  precision, ``BWN_EPOCHS`` epochs of training; bytes of the binarized layers in the saved file
  (``netshrink.codec.inspect``) against their dense fp32 bytes.
- 1-D k-means speed: 32 centroids over 1M real weights (every weight matrix of the three kept
  checkpoints, concatenated and tiled to 1M as the codec benchmark does), ours (density and linear
  initialisation, then Lloyd; and the exact Ckmeans.1d.dp) against scikit-learn's
  ``KMeans(n_clusters=32, n_init=1)`` in the same run; inertia of each on the same values.
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
from benchmarks.common import CHECKPOINTS, RESULTS, target, targets_markdown, update_benchmarks_md, write_results
from netshrink.codec.inspect import inspect_file
from netshrink.measure import evaluate
from netshrink.quant import Binarize, Cluster, Quantize, kmeans_1d
from netshrink.quant.onnx_export import export_onnx, onnx_accuracy, onnx_latency_ms, quantize_onnx_int8
from netshrink.train import FitConfig, fit, load_model

MODELS = ("lenet300_100", "lenet5")
BITS = (8, 6, 5, 4, 3, 2)
TRAIN_EPOCHS = 1
TRAIN = FitConfig(epochs=TRAIN_EPOCHS, batch_size=128, lr=1e-4, optimizer="adam", weight_decay=0.0, seed=0)
BWN_EPOCHS = 4
BWN_TRAIN = FitConfig(epochs=BWN_EPOCHS, batch_size=128, lr=1e-3, optimizer="adam", weight_decay=0.0, seed=0)
KMEANS_WEIGHTS = 1_000_000
KMEANS_CLUSTERS = 32
ONNX_MODELS = ("lenet5", "convnet")
CALIBRATION_IMAGES = 512
THREADS = 1
CONV = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)


def checkpoint(name: str) -> torch.nn.Module:
    return load_model(CHECKPOINTS / f"{name}.safetensors")


def measured(model: torch.nn.Module, data, folder: Path, tag: str) -> dict:
    """Finalize, save and reload ``model``; accuracy of the reloaded model and its file bytes."""
    netshrink.finalize_(model)
    path = folder / f"{tag}.nsk"
    netshrink.save(model, path)
    loaded = netshrink.load(path)
    return {"test_acc": evaluate(loaded, data.test), "val_acc": evaluate(loaded, data.val),
            "file_bytes": path.stat().st_size}


def bits_sweep(name: str, data, folder: Path) -> dict:
    """Every method at every bit width on one model, plus the fp32 baseline."""
    rows = {"fp32": measured(checkpoint(name), data, folder, f"{name}-fp32")}
    methods = {
        "uniform PTQ": (lambda b: Quantize(bits=b, calibration="mse"), False),
        "uniform QAT": (lambda b: Quantize(bits=b, calibration="mse"), True),
        "cluster": (lambda b: Cluster(bits=b, init="linear"), False),
        "cluster + fine-tuned centroids": (lambda b: Cluster(bits=b, init="linear"), True),
    }
    for method, (make, train) in methods.items():
        rows[method] = {}
        for bits in BITS:
            start = time.perf_counter()
            model = checkpoint(name)
            netshrink.apply_(model, make(bits))
            if train:
                fit(model, data, TRAIN, progress=False)
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


def binary_weights(data, folder: Path) -> dict:
    """BWN lenet5, first and last layers in full precision."""
    start = time.perf_counter()
    model = checkpoint("lenet5")
    netshrink.apply_(model, Binarize(method="bwn"))
    binarized = netshrink.get_log(model)[-1]["layers"]
    fit(model, data, BWN_TRAIN, progress=False)
    result = measured(model, data, folder, "lenet5-bwn")
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


def kmeans_speed() -> dict:
    """Our 1-D k-means against scikit-learn's KMeans on the same 1M weights."""
    from sklearn.cluster import KMeans

    values, distinct_source = real_weights(KMEANS_WEIGHTS)
    rows = {}
    for init, repeats in (("density", 3), ("linear", 3), ("optimal", 1)):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            result = kmeans_1d(values, KMEANS_CLUSTERS, init=init)
            times.append(time.perf_counter() - start)
        rows[f"ours ({init})"] = {"seconds": statistics.median(times), "runs": repeats, "inertia": result.inertia,
                                  "lloyd_steps": result.steps}
    start = time.perf_counter()
    km = KMeans(n_clusters=KMEANS_CLUSTERS, n_init=1, random_state=0).fit(values.reshape(-1, 1).astype(np.float64))
    seconds = time.perf_counter() - start
    centres = np.sort(km.cluster_centers_.ravel())
    inertia = float(np.min((values[:, None].astype(np.float64) - centres[None, :]) ** 2, axis=1).sum())
    rows["scikit-learn KMeans(n_clusters=32, n_init=1)"] = {"seconds": seconds, "runs": 1, "inertia": inertia,
                                                             "lloyd_steps": int(km.n_iter_)}
    return {"weights": KMEANS_WEIGHTS, "source_weights": distinct_source, "clusters": KMEANS_CLUSTERS, "runs": rows}


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


def markdown(doc: dict, targets: list[dict]) -> str:
    lines = ["## quantization", "",
             "`python benchmarks/quantization.py` (Fashion-MNIST, kept checkpoints; test accuracy in %, files are "
             f"finalized `.nsk`; training runs are {TRAIN_EPOCHS} epoch(s) of Adam at lr 1e-4, fixed in advance). "
             f"Raw numbers: `benchmarks/results/quantization.json`; plot: `benchmarks/results/quantization.png`.", ""]
    for name, rows in doc["bits_sweep"].items():
        lines += [f"**{name}** (fp32: {100 * rows['fp32']['test_acc']:.2f}%, {rows['fp32']['file_bytes']:,} B)", "",
                  "| method | " + " | ".join(f"{b} bits" for b in BITS) + " |", "|---" * (len(BITS) + 1) + "|"]
        for method, by_bits in rows.items():
            if method != "fp32":
                lines.append(f"| {method} | " + " | ".join(
                    f"{100 * by_bits[str(b)]['test_acc']:.2f} ({by_bits[str(b)]['file_bytes'] / 1024:.0f} KiB)"
                    for b in BITS) + " |")
        lines.append("")
    lines += ["**Conv against fc layers** (lenet5, clustering post-training, the other layers fp32; Deep Compression "
              "6.1)", "", "| layers clustered | " + " | ".join(f"{b} bits" for b in BITS) + " |",
              "|---" * (len(BITS) + 1) + "|"]
    for part, by_bits in doc["conv_against_fc"].items():
        lines.append(f"| {part} | " + " | ".join(f"{100 * by_bits[str(b)]['test_acc']:.2f}" for b in BITS) + " |")
    bwn = doc["binary_weights"]
    lines += ["", f"**BWN lenet5** (first and last layers fp32, {BWN_EPOCHS} epochs): test "
              f"{100 * bwn['test_acc']:.2f}%, binarized layers {bwn['binarized_bytes']:,} B against "
              f"{bwn['binarized_dense_fp32_bytes']:,} B fp32 ({bwn['binarized_rate']:.1f}x), file "
              f"{bwn['file_bytes']:,} B.", "",
              f"**1-D k-means**, {KMEANS_CLUSTERS} clusters over {KMEANS_WEIGHTS:,} real weights:", "",
              "| implementation | seconds | inertia | Lloyd steps |", "|---|---|---|---|"]
    for impl, row in doc["kmeans_speed"]["runs"].items():
        lines.append(f"| {impl} | {row['seconds']:.3f} | {row['inertia']:.6g} | {row['lloyd_steps']} |")
    lines += ["", f"**ONNX Runtime int8 against fp32** ({THREADS} thread, median latency):", "",
              "| model | fp32 acc | int8 acc | change (points) | batch 1 fp32 / int8 ms | batch 256 fp32 / int8 ms |",
              "|---|---|---|---|---|---|"]
    for name, row in doc["onnx_int8"].items():
        lines.append(f"| {name} | {100 * row['fp32']['test_acc']:.2f} | {100 * row['int8']['test_acc']:.2f} | "
                     f"{row['accuracy_change_points']:+.2f} | {row['fp32']['batch_1_ms']:.3f} / "
                     f"{row['int8']['batch_1_ms']:.3f} | {row['fp32']['batch_256_ms']:.2f} / "
                     f"{row['int8']['batch_256_ms']:.2f} |")
    lines += ["", targets_markdown(targets)]
    return "\n".join(lines)


def main() -> None:
    start = time.perf_counter()
    torch.set_num_threads(THREADS)
    data = netshrink.load_dataset("fashion-mnist")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        doc = {"kmeans_speed": kmeans_speed()}
        print(f"kmeans: {doc['kmeans_speed']}", flush=True)
        doc["onnx_int8"] = onnx_int8(data, folder)
        doc["binary_weights"] = binary_weights(data, folder)
        print(f"bwn: {doc['binary_weights']}", flush=True)
        doc["conv_against_fc"] = conv_against_fc(data, folder)
        doc["bits_sweep"] = {name: bits_sweep(name, data, folder) for name in MODELS}
    plot(doc["bits_sweep"], doc["conv_against_fc"], RESULTS / "quantization.png")
    wall = time.perf_counter() - start
    sweeps, bwn, km = doc["bits_sweep"], doc["binary_weights"], doc["kmeans_speed"]["runs"]
    sklearn = km["scikit-learn KMeans(n_clusters=32, n_init=1)"]
    targets = [
        *(target(f"{name}: 4-bit clustering + fine-tuned centroids, points below fp32",
                 100 * (sweeps[name]["fp32"]["test_acc"] - sweeps[name]["cluster + fine-tuned centroids"]["4"]
                        ["test_acc"]), 0.3, "<=") for name in MODELS),
        target("lenet5 BWN (first/last fp32): points below fp32",
               100 * (sweeps["lenet5"]["fp32"]["test_acc"] - bwn["test_acc"]), 2.0, "<="),
        target("lenet5 BWN: binarized layers' fp32 bytes / stored bytes", bwn["binarized_rate"], 25.0, ">="),
        target("1-D k-means (density init) speed-up over scikit-learn KMeans, 1M weights",
               sklearn["seconds"] / km["ours (density)"]["seconds"], 10.0, ">="),
        target("1-D k-means (density init) inertia / scikit-learn's", km["ours (density)"]["inertia"]
               / sklearn["inertia"], 1.0, "<="),
        target("whole benchmark wall time (s)", wall, 3600.0, "<="),
    ]
    write_results("quantization", doc, targets, wall_seconds=wall, device="cpu", threads=THREADS,
                  train_config=TRAIN.to_dict(), bwn_train_config=BWN_TRAIN.to_dict())
    update_benchmarks_md("quantization", markdown(doc, targets))
    print(targets_markdown(targets))


if __name__ == "__main__":
    main()
