"""What a .nsk file holds, per tensor, in the form of Deep Compression's Table 2.

Han et al. 2016, Table 2 lists per layer the number of weights, the percentage kept by pruning,
the bits per weight and per index after quantization and Huffman coding, and the compression rate.
``inspect_file`` gives those numbers per state-dict tensor, measured from the file's streams;
``inspect_report`` prints them with a totals line: the real file size against the original model's
dense fp32 bytes the file records (``measure.size.fp32_baseline``; for a file written before that
record, the dense fp32 size of its own state dict, labelled as such).
"""

from __future__ import annotations

import os
from typing import Any

from netshrink.codec.container import read_kept
from netshrink.codec.tensor_encodings import DTYPES, FLOAT_DTYPES, itemsize
from netshrink.codec.validate import ORIGINAL_BYTES_KEY
from netshrink.core.errors import NetshrinkFormatError, one_line
from netshrink.measure.size import Baseline, fp32_safetensors_bytes


def inspect_file(path: str | os.PathLike, max_params: int | None = None) -> list[dict[str, Any]]:
    """One row per tensor: name, encoding, dtype, shape, weights, kept, bits per weight and per
    index (per kept weight for sparse tensors), stored bytes and the rate against dense fp32.

    Only the nonzero counts are decoded, one tensor at a time, and a sparse tensor is never
    expanded (``container.read_kept``), so a tiny file declaring huge tensors cannot exhaust
    memory; ``max_params`` as in ``container.read_tensors``."""
    return _rows(read_kept(path, max_params=max_params))


def _rows(read: tuple[dict[str, Any], dict[str, Any], dict[str, int]]) -> list[dict[str, Any]]:
    _, specs, kept_counts = read
    rows = []
    for name, spec in specs.items():
        kept = kept_counts[name]
        stored = 0 if spec.alias is not None else sum(s.nbytes for s in spec.streams.values())
        index_bytes = spec.streams["gaps"].nbytes if "gaps" in spec.streams and spec.alias is None else None
        per = max(kept, 1) if index_bytes is not None else max(spec.numel, 1)
        dense = spec.numel * (4 if spec.dtype in FLOAT_DTYPES else itemsize(spec.dtype))
        rows.append({
            "name": name, "encoding": "alias" if spec.alias is not None else "+".join(spec.chain),
            "dtype": spec.dtype, "shape": spec.shape, "weights": spec.numel, "kept": kept,
            "kept_pct": 100.0 * kept / spec.numel if spec.numel else 100.0,
            "bits_per_weight": 8 * (stored - (index_bytes or 0)) / per,
            "bits_per_index": None if index_bytes is None else 8 * index_bytes / per,
            "bytes": stored, "dense_fp32_bytes": dense,
            "rate": dense / stored if stored else float("inf"),
        })
    return rows


def printable(name: str) -> str:
    """``name`` as it may be printed: control and other unprintable characters escaped, so a name
    from a file cannot rewrite the terminal."""
    return name if name.isprintable() else name.encode("unicode_escape").decode("ascii")


def inspect_report(path: str | os.PathLike) -> str:
    """A text table of ``inspect_file`` plus totals: payload, and the real file against the
    original dense fp32 size. Whatever fails after the file is opened is one
    ``NetshrinkFormatError``."""
    read = read_kept(path)
    try:
        return _report(path, read)
    except Exception as error:  # noqa: BLE001 (the rows come from an untrusted file)
        raise NetshrinkFormatError(f"cannot report on the file ({one_line(error)})") from None


def _report(path: str | os.PathLike, read: tuple[dict[str, Any], dict[str, Any], dict[str, int]]) -> str:
    rows = _rows(read)
    header = (f"{'layer':<32} {'encoding':<20} {'#weights':>10} {'kept %':>7} {'bits/w':>7} "
              f"{'bits/idx':>8} {'bytes':>10} {'rate':>7}")
    lines = [header, "-" * len(header)]
    for row in rows:
        index = "-" if row["bits_per_index"] is None else f"{row['bits_per_index']:.2f}"
        lines.append(f"{printable(row['name'])[:32]:<32} {row['encoding']:<20} {row['weights']:>10} "
                     f"{row['kept_pct']:>7.1f} {row['bits_per_weight']:>7.2f} {index:>8} "
                     f"{row['bytes']:>10} {row['rate']:>6.1f}x")
    weights = sum(r["weights"] for r in rows)
    kept = sum(r["kept"] for r in rows)
    payload = sum(r["bytes"] for r in rows)
    lines.append("-" * len(header))
    lines.append(f"total: {weights} weights, {100.0 * kept / max(weights, 1):.1f}% kept, "
                 f"{payload} bytes of streams, file {file_baseline(read[0], rows).versus(os.path.getsize(path))}")
    return "\n".join(lines)


def file_baseline(document: dict[str, Any], rows: list[dict[str, Any]]) -> Baseline:
    """The compression-rate baseline of a file: the original dense fp32 bytes it records, else
    (an older file) its own tensors written dense fp32, labelled."""
    recorded = document.get(ORIGINAL_BYTES_KEY)
    if recorded is not None:
        return Baseline(recorded, True)
    return Baseline(fp32_safetensors_bytes({
        r["name"]: (r["shape"], r["dtype"] in FLOAT_DTYPES, DTYPES[r["dtype"]]) for r in rows}),
        not document.get("transform_log"))  # an untouched model is its own original
