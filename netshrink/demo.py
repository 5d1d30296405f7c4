"""``netshrink demo``: the main job on the embedded default data (Fashion-MNIST).

A short tour through every compression family, one stage each, as one recipe
(``netshrink.pipeline``) on LeNet-300-100 (the cheapest zoo model to fine-tune, so the tour fits
the 2-core machine's 10 minutes): the kept baseline (``benchmarks/checkpoints/lenet300_100``;
trained here for ``--epochs`` when it is missing or the data is another), then

1. architecture: low-rank factorization of fc1 (energy 0.9), fine-tuned distilled from the baseline
   (distillation, Hinton et al. 2015);
2. dynamic: an early exit after the first layer, trained jointly, its threshold calibrated;
3. pruning: 80% of every layer's weights, fine-tuned (the exit still trains);
4. quantization: 5-bit weight clustering with centroid fine-tuning; ``save`` entropy-codes it.

It ends with one table (validation accuracy, file bytes, compression rate against the dense fp32
baseline, MACs, batch-1 latency) and the path of the HTML report. Every figure is measured.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

BASELINE = Path(__file__).resolve().parents[1] / "benchmarks" / "checkpoints" / "lenet300_100.safetensors"
FINE_TUNE = {"lr": 0.01, "batch_size": 128}


def demo_recipe(data: str, data_dir: str | None, epochs: int) -> dict[str, Any]:
    """The tour as a recipe (a plain dict, the TOML's shape): five families, one stage each."""
    stages: list[dict[str, Any]] = []
    if data == "fashion-mnist" and BASELINE.is_file():
        model = {"checkpoint": str(BASELINE)}
    else:
        model = {"zoo": "lenet300_100"}
        stages.append({"verb": "train", "epochs": epochs, "fit": {"lr": 0.05, "batch_size": 128}})
    stages += [
        {"verb": "low_rank", "config": {"energy": 0.9, "layers": ["fc1"]}, "epochs": 1, "teacher": "baseline",
         "distill": {"T": 4.0, "alpha": 0.9}, "fit": FINE_TUNE},
        {"verb": "early_exit", "config": {"after": ["fc1"]}, "epochs": 1, "fit": FINE_TUNE},
        {"verb": "magnitude_prune", "config": {"sparsity": 0.8}, "epochs": 1, "fit": FINE_TUNE},
        {"verb": "cluster", "config": {"bits": 5}, "epochs": 1,
         "fit": {"optimizer": "adam", "lr": 0.001, "weight_decay": 0.0, "batch_size": 128}},
    ]
    source: dict[str, Any] = {"name": "demo-tour", "model": model, "data": {"name": data}, "stages": stages}
    if data_dir is not None:
        source["data"]["dir"] = data_dir
    return source


def comparison_table(report: dict[str, Any]) -> str:
    """One row per stage: what each family's stage costs and buys."""
    labels = [f"{row['stage']}:{row['verb']}" for row in report["stages"]]
    width = max(len("stage"), *map(len, labels)) + 2
    header = f"{'stage':<{width}}{'val acc':>9}{'file bytes':>12}{'rate':>8}{'MACs':>12}{'latency ms':>12}"
    lines = [header, "-" * len(header)]
    notes = []
    for label, row in zip(labels, report["stages"], strict=True):
        counted = row.get("macs_counted")
        if counted is not None and counted not in notes:
            notes.append(counted)
        macs = f"{row['macs']:,}" + ("*" * (notes.index(counted) + 1) if counted is not None else "")
        lines.append(f"{label:<{width}}{100 * row['val_accuracy']:>8.2f}%{row['file_bytes']:>12,}"
                     f"{row['rate']:>7.1f}x{macs:>12}{row['latency_ms']:>12.3f}")
    final = report["final"]
    lines.append("MACs: dense multiply-accumulates of one sample"
                 + "".join(f"; {'*' * (i + 1)} {note} (the report's operating points give the average)"
                           for i, note in enumerate(notes)))
    lines.append(f"rate: against the original model as dense fp32 ({final['baseline_dense_fp32_bytes']:,} bytes, the "
                 "baseline row)")
    lines.append(f"test accuracy: baseline {100 * final['baseline_test_accuracy']:.2f}%, final "
                 f"{100 * final['test_accuracy']:.2f}% ({final['file_bytes']:,} bytes, {final['rate']:.1f}x smaller "
                 "than the original dense fp32 model)")
    return "\n".join(lines)


def run_demo(out: str | Path, data: str = "fashion-mnist", data_dir: str | None = None, epochs: int = 10) -> int:
    """Run the tour into ``out`` (resuming an interrupted one there) and print its table; returns 0."""
    from netshrink.pipeline import parse_recipe, run_recipe

    recipe = parse_recipe(demo_recipe(data, data_dir, epochs), where="the demo recipe")
    out = Path(out)
    report = run_recipe(recipe, out)
    print()
    print(comparison_table(report))
    print(f"\nHTML report: {out / 'report.html'}\ncompressed model: {out / 'model.nsk'} "
          f"(netshrink inspect {out / 'model.nsk'})")
    return 0
