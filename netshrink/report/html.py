"""``write_html_report``: one HTML file with the run's tables and its figures inlined (base64 PNG),
so it can be mailed or archived without the run folder."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from netshrink.core.files import write_atomically
from netshrink.report import plots

STAGE_COLUMNS = (("stage", "{}"), ("verb", "{}"), ("val_accuracy", "{:.4f}"), ("file_bytes", "{:,}"),
                 ("rate", "{:.1f}x"), ("params", "{:,}"), ("nonzero_params", "{:,}"), ("macs", "{:,}"),
                 ("latency_ms", "{:.3f}"), ("seconds", "{:.1f}"))
LAYER_COLUMNS = (("name", "{}"), ("encoding", "{}"), ("weights", "{:,}"), ("kept_pct", "{:.1f}"),
                 ("bits_per_weight", "{:.2f}"), ("bits_per_index", "{:.2f}"), ("bytes", "{:,}"), ("rate", "{:.1f}x"))


def table_html(rows: list[dict[str, Any]], columns: tuple[tuple[str, str], ...]) -> str:
    head = "".join(f"<th>{html.escape(name)}</th>" for name, _ in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape('-' if r.get(n) is None else f.format(r[n]))}</td>" for n, f in columns)
        + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def image_html(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _macs_note(stages: list[dict[str, Any]]) -> str:
    """What the stage table's MACs count: one sample's path, and for stages whose count is of
    something else (early exits leaving by confidence: every exit), which stages and what."""
    notes: dict[str, list[str]] = {}
    for stage in stages:
        if stage.get("macs_counted"):
            notes.setdefault(stage["macs_counted"], []).append(str(stage["stage"]))
    extra = "".join(f"; stage(s) {', '.join(which)}: {note} (the operating points below give the average)"
                    for note, which in notes.items())
    return f"<p>MACs: dense multiply-accumulates of one sample{html.escape(extra)}.</p>"


def _test_sentence(final: dict[str, Any]) -> str:
    if final.get("test_accuracy") is None:
        return "Test split not read (a run made for a search that chooses on validation); "
    return f"Test accuracy {final['test_accuracy']:.4f} (baseline {final['baseline_test_accuracy']:.4f}); "


def render_html(report: dict[str, Any]) -> str:
    """The report as one self-contained HTML page."""
    stages, final = report["stages"], report["final"]
    parts = [
        f"<h1>netshrink run: {html.escape(report['recipe'])}</h1>",
        f"<p>data {html.escape(report['data'])}; torch {html.escape(report['torch'])} on {report['device']}. "
        + _test_sentence(final) +
        f"file {final['file_bytes']:,} bytes against the original model's {final['baseline_dense_fp32_bytes']:,} "
        "dense fp32 bytes (the baseline row; every rate is against it): "
        f"<b>{final['rate']:.1f}x</b>. Accuracies per stage are on validation; test only here.</p>",
        "<h2>Stages</h2>", table_html(stages, STAGE_COLUMNS), _macs_note(stages),
        image_html(plots.accuracy_vs_size(stages), "accuracy against file size"),
        "<h2>Per tensor, final file</h2>", image_html(plots.layer_bits_and_sparsity(stages[-1]), "bits and sparsity"),
        table_html(stages[-1]["layers"], LAYER_COLUMNS),
    ]
    for stage in stages:
        if stage.get("dynamic_points"):
            parts += [f"<h2>Operating points after stage {stage['stage']} ({html.escape(stage['verb'])})</h2>",
                      image_html(plots.accuracy_vs_macs(stage["dynamic_points"], f"{stage['verb']}: accuracy vs MACs"),
                             "accuracy against MACs")]
    return page("netshrink report", parts)


def page(title: str, parts: list[str]) -> str:
    """One self-contained HTML page of ``parts`` (HTML fragments) in the reports' style."""
    style = ("body{font-family:sans-serif;max-width:1000px;margin:auto}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right;font-size:13px}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")


def write_html_report(report: dict[str, Any], path: str | Path) -> Path:
    """Write ``render_html(report)`` to ``path`` atomically; returns the path."""
    write_atomically(path, render_html(report).encode())
    return Path(path)
