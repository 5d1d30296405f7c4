"""``OUT/report.html`` of a search: the Pareto front with the chosen point (and hand recipes'
points) marked, the chosen allocation as a bar per layer, every point, and the time spent.
Built on ``netshrink.report`` (matplotlib Agg figures inlined as base64 PNG, one page style)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from netshrink.autocompress.budget import UNITS
from netshrink.autocompress.choices import Choice
from netshrink.core.files import write_atomically
from netshrink.report.html import image_html, page, table_html
from netshrink.report.plots import figure, png

POINT_COLUMNS = (("index", "{}"), ("label", "{}"), ("val_accuracy", "{:.4f}"), ("drop", "{:.2f}"),
                 ("file_bytes", "{:,}"), ("macs", "{:,}"), ("latency_ms", "{:.3f}"), ("seconds", "{:.0f}"))
COST_AXIS = {"bytes": "file bytes (.nsk)", "macs": "MACs per sample", "latency_ms": "batch-1 latency (ms, 1 thread)"}


def front_figure(result: Any, hand: list[dict[str, Any]]) -> bytes:
    """Validation accuracy against cost: every point, the front joined, the limit, the chosen
    point starred, hand recipes' points as diamonds."""
    fig, ax = figure(7.0, 4.2)
    every = result.points
    ax.scatter([p["cost"] for p in every], [100 * p["val_accuracy"] for p in every], color="0.6", label="points")
    ax.plot([p["cost"] for p in result.front], [100 * p["val_accuracy"] for p in result.front], "o-",
            color="tab:blue", label="Pareto front")
    for p in every:
        ax.annotate(str(p["index"]), (p["cost"], 100 * p["val_accuracy"]), textcoords="offset points",
                    xytext=(4, 4), fontsize=7)
    chosen = result.chosen
    ax.plot([chosen["cost"]], [100 * chosen["val_accuracy"]], "*", markersize=16, color="tab:red",
            label=f"chosen (point {chosen['index']})")
    for point in hand:
        ax.plot([point["cost"]], [100 * point["val_accuracy"]], "D", color="tab:green")
        ax.annotate(point["label"], (point["cost"], 100 * point["val_accuracy"]), textcoords="offset points",
                    xytext=(4, -10), fontsize=7, color="tab:green")
    ax.axvline(result.limit, color="tab:red", linestyle="--", linewidth=1, label="limit")
    ax.axhline(100 * result.original["val_accuracy"], color="0.3", linestyle=":", linewidth=1, label="original")
    ax.set_xscale("log")
    ax.set_xlabel(COST_AXIS[result.kind].replace("1 thread", f"1 thread, {result.budget.runtime}"))
    ax.set_ylabel(f"{result.score} (%)")
    ax.legend(fontsize=7)
    ax.set_title("points of the search")
    return png(fig)


def allocation_figure(allocation: dict[str, dict[str, Any]]) -> bytes:
    """One bar per layer: bits (cluster / int, none for a kept layer) on the left axis; sparsity
    and channels removed (%) as markers on the right."""
    choices = {layer: Choice.from_dict(c) for layer, c in allocation.items()}
    names = list(choices)
    fig, ax = figure(max(6.0, 0.6 * len(names)), 3.8)
    colors = {"cluster": "tab:blue", "int": "tab:orange", None: "0.8"}
    ax.bar(range(len(names)), [c.bits if c.values else 32 for c in choices.values()],
           color=[colors[c.values] for c in choices.values()])
    ax.set_ylabel("bits per kept weight (blue: cluster,\norange: int, grey: fp32 kept)")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
    share = ax.twinx()
    share.plot(range(len(names)), [100 * c.sparsity for c in choices.values()], "o", color="tab:red",
               label="sparsity (%)")
    share.plot(range(len(names)), [100 * c.amount for c in choices.values()], "s", color="tab:purple",
               label="channels removed (%)")
    share.set_ylim(0, 105)
    share.set_ylabel("% of the layer")
    share.legend(fontsize=7, loc="upper right")
    ax.set_title("chosen allocation, per layer")
    return png(fig)


def render_auto_report(result: Any, hand: list[dict[str, Any]]) -> str:
    """The search's report as one self-contained HTML page."""
    chosen, unit = result.chosen, UNITS[result.kind]
    verdict = ("meets the budget" if result.met
               else "<b>misses the budget</b>: " + html.escape("; ".join(result.failed)) + " (the closest point found)")
    partial = f"<p><b>Partial result</b>: {html.escape(result.partial)}.</p>" if result.partial else ""
    seconds = result.seconds
    allocation = [{"layer": layer, "setting": Choice.from_dict(c).label} for layer, c in chosen["allocation"].items()]
    parts = [
        "<h1>netshrink auto</h1>", partial,
        f"<p>Budget: {html.escape(result.budget.field)} {result.limit:,.4g} {unit}"
        + (f", at most {result.budget.max_drop:g} points of {result.score} lost" if result.budget.max_drop
           is not None else "")
        + f". Original: {result.score} {result.original['val_accuracy']:.4f}, "
        f"{result.original['dense_fp32_bytes']:,} dense fp32 bytes, {result.original['macs']:,} MACs, "
        f"{result.original['latency_ms']:.3f} ms. Every choice is made on validation; the test split is not read.</p>",
        f"<p>Chosen: point {chosen['index']} ({html.escape(chosen['label'])}), {result.score} "
        f"{chosen['val_accuracy']:.4f} ({chosen['drop']:.2f} points below the original), {chosen['file_bytes']:,} "
        f"bytes ({result.original['dense_fp32_bytes'] / chosen['file_bytes']:.1f}x), {chosen['macs']:,} MACs, "
        f"{chosen['latency_ms']:.3f} ms: {verdict}. Recipe: <code>{html.escape(str(chosen['recipe_file']))}</code> "
        "(<code>netshrink run</code> reproduces it).</p>",
        "<h2>Pareto front</h2>", image_html(front_figure(result, hand), "Pareto front"),
        "<h2>Chosen allocation</h2>", image_html(allocation_figure(chosen["allocation"]), "allocation per layer"),
        table_html(allocation, (("layer", "{}"), ("setting", "{}"))),
        "<h2>Every point</h2>", table_html(result.points, POINT_COLUMNS),
        "<h2>Time spent</h2>",
        table_html([{"part": name, "seconds": seconds[name]} for name in ("table", "sizing", "points", "total")],
                   (("part", "{}"), ("seconds", "{:.1f}"))),
        f"<p>{html.escape(result.stopped)}.</p>",
    ]
    return page("netshrink auto report", parts)


def write_auto_report(result: Any, hand: list[dict[str, Any]], path: str | Path) -> Path:
    """Write ``render_auto_report`` to ``path`` atomically; returns the path."""
    write_atomically(path, render_auto_report(result, hand).encode())
    return Path(path)
