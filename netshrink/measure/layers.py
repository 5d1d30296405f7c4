"""A per-layer table: parameters, nonzeros, dense bytes and MACs of every weighted layer, and the
MACs outside them, so the rows add up to the model's total."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from netshrink.core.selection import select
from netshrink.measure.macs import count_macs_per_module

#: the row of MACs counted outside every Linear/Conv layer (parameters are all in the layers' rows)
OUTSIDE = "(outside these layers)"


def layer_table(model: nn.Module, input_shape: Sequence[int]) -> list[dict]:
    """One row per Linear/Conv layer: name, type, weight shape, params, nonzero, fp32 bytes, MACs
    (``count_macs_per_module``); then, when the model computes MACs outside those layers, an
    ``OUTSIDE`` row with them: the MACs column sums to ``count_macs``."""
    macs = count_macs_per_module(model, input_shape)
    rows = []
    for name, module in select(model).items():
        params = sum(p.numel() for p in module.parameters(recurse=False))
        nonzero = sum(int((p.detach() != 0).sum()) for p in module.parameters(recurse=False))
        rows.append({
            "layer": name,
            "type": type(module).__name__,
            "shape": list(module.weight.shape),
            "params": params,
            "nonzero": nonzero,
            "fp32_bytes": params * 4,
            "macs": macs.get(name, 0),
        })
    outside = macs.get("", 0) - sum(r["macs"] for r in rows)
    if outside > 0:  # e.g. attention's products, or projections a module runs with F.linear itself
        rows.append({"layer": OUTSIDE, "type": "-", "shape": [], "params": 0, "nonzero": 0, "fp32_bytes": 0,
                     "macs": outside})
    return rows


def format_layer_table(rows: list[dict]) -> str:
    """Render ``layer_table`` rows as a fixed-width text table with a total line."""
    header = f"{'layer':<24} {'type':<8} {'shape':<18} {'params':>10} {'nonzero':>10} {'MACs':>12}"
    lines = [header, "-" * len(header)]
    for r in rows:
        shape = "x".join(map(str, r["shape"]))
        lines.append(f"{r['layer']:<24} {r['type']:<8} {shape:<18} {r['params']:>10,} "
                     f"{r['nonzero']:>10,} {r['macs']:>12,}")
    lines.append("-" * len(header))
    lines.append(f"{'total':<24} {'':<8} {'':<18} {sum(r['params'] for r in rows):>10,} "
                 f"{sum(r['nonzero'] for r in rows):>10,} {sum(r['macs'] for r in rows):>12,}")
    return "\n".join(lines)
