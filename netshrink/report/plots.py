"""The report's figures, drawn with matplotlib (Agg) and returned as PNG bytes."""

from __future__ import annotations

import io
from typing import Any


def png(fig: Any) -> bytes:
    """``fig`` as PNG bytes (tight layout, 100 dpi); closes it."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def figure(width: float = 6.0, height: float = 3.6) -> tuple[Any, Any]:
    """A new matplotlib figure and axes on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def accuracy_vs_size(stages: list[dict[str, Any]]) -> bytes:
    """Validation accuracy against file bytes (log scale) after each stage, labelled by verb."""
    fig, ax = figure()
    sizes = [s["file_bytes"] for s in stages]
    accs = [100 * s["val_accuracy"] for s in stages]
    ax.plot(sizes, accs, "o-")
    for s, x, y in zip(stages, sizes, accs, strict=True):
        ax.annotate(f"{s['stage']}:{s['verb']}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("file bytes (.nsk)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("accuracy against file size, stage by stage")
    return png(fig)


def weight_rows(layers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of weight matrices and kernels (two or more dimensions): biases, BatchNorm vectors
    and buffers, mixed in, made the kept-weights line zigzag between ~100% and the pruned level.
    Rows without a shape (reports written before it was recorded) go by name."""
    return [r for r in layers
            if (len(r["shape"]) >= 2 if "shape" in r else r["name"].endswith(".weight") and r["weights"] > 1)]


def layer_bits_and_sparsity(stage: dict[str, Any]) -> bytes:
    """Per weight tensor stored bits per weight (bars) and percentage of weights kept (line), final stage."""
    layers = weight_rows(stage["layers"])
    fig, ax = figure(max(6.0, 0.5 * len(layers)), 3.8)
    names = [r["name"] for r in layers]
    ax.bar(range(len(layers)), [r["bits_per_weight"] for r in layers], color="tab:blue")
    ax.set_ylabel("stored bits per weight", color="tab:blue")
    ax.set_xticks(range(len(layers)), names, rotation=60, ha="right", fontsize=7)
    kept = ax.twinx()
    kept.plot(range(len(layers)), [r["kept_pct"] for r in layers], "o-", color="tab:red")
    kept.set_ylabel("weights kept (%)", color="tab:red")
    kept.set_ylim(0, 105)
    ax.set_title(f"weight tensors after stage {stage['stage']} ({stage['verb']})")
    return png(fig)


def point_label(point: dict[str, Any]) -> str:
    """``"threshold 0.776"``, ``"exit 1"``, ``"width 0.5"``: values to 3 significant digits."""
    return f"{point['kind']} {point['value']:.3g}"


def operating_curve(points: list[dict[str, Any]]) -> list[tuple[float, float, str]]:
    """``(MACs, accuracy %, label)`` per operating point, in order of MACs (then accuracy), the
    order the line joins them in (in the profile's order, exits then thresholds, the line doubled
    back on itself)."""
    return sorted((float(p["macs"]), 100 * p["accuracy"], point_label(p)) for p in points)


def accuracy_vs_macs(points: list[dict[str, Any]], title: str) -> bytes:
    """Validation accuracy against MACs per sample of a dynamic model's operating points."""
    fig, ax = figure()
    curve = operating_curve(points)
    ax.plot([m for m, _, _ in curve], [a for _, a, _ in curve], "o-")
    for macs, accuracy, label in curve:
        ax.annotate(label, (macs, accuracy), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set_xlabel("MACs per sample")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(title)
    return png(fig)
