"""What lossless float coding (float_bytes) gains on dense zoo models, measured on real .nsk files.

    python benchmarks/lossless.py

For each zoo model (trained checkpoint ``benchmarks/checkpoints/<name>.safetensors`` if present,
else a freshly initialised model, recorded as ``"source"``) and each float dtype (fp32, and the
same weights cast to bf16 and fp16), the model is saved twice with ``netshrink.codec.container``:
once with every tensor forced to plain ``dense`` and once with ``float_bytes`` allowed (the
ZipNN / DFloat11 exponent-plane entropy coding; the writer keeps it only where it is smaller).
Sizes are real file bytes against the dense fp32 safetensors baseline of the state dict; zlib -9
on the raw float bytes is the usual general-purpose reference (ZipNN, Hershcovitch et al. 2024).
Writes ``benchmarks/results/lossless.json`` and the lossless section of BENCHMARKS.md.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from benchmarks.codec import load_weights
from benchmarks.common import publish, results_doc
from netshrink.codec.container import load, save
from netshrink.codec.tensor_encodings import tensor_bits
from netshrink.measure.size import dense_fp32_bytes
from netshrink.models import create

MODELS = ("lenet300_100", "lenet5", "convnet")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def build(name: str, dtype: torch.dtype) -> tuple[torch.nn.Module, str]:
    weights, source = load_weights(name)
    model = create(name)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    return model.to(dtype).eval(), source


def file_bytes(model: torch.nn.Module, folder: str, label: str, dense_only: bool) -> tuple[int, float, float]:
    """Size of the .nsk file, save and load seconds; checks the load is bit-identical."""
    encodings = {name: "dense" for name in model.state_dict()} if dense_only else None
    path = os.path.join(folder, f"{label}.nsk")
    start = time.perf_counter()
    save(model, path, encodings=encodings)
    saved = time.perf_counter() - start
    start = time.perf_counter()
    loaded = load(path)
    loaded_s = time.perf_counter() - start
    for key, tensor in model.state_dict().items():
        assert (tensor_bits(tensor) == tensor_bits(loaded.state_dict()[key])).all(), key
    return os.path.getsize(path), saved, loaded_s


def measure(name: str, dtype_name: str, folder: str) -> dict:
    model, source = build(name, DTYPES[dtype_name])
    float_bytes = b"".join(tensor_bits(t).tobytes() for t in model.state_dict().values() if t.is_floating_point())
    dense_nsk, _, _ = file_bytes(model, folder, f"{name}-{dtype_name}-dense", dense_only=True)
    coded_nsk, save_s, load_s = file_bytes(model, folder, f"{name}-{dtype_name}-auto", dense_only=False)
    baseline = dense_fp32_bytes(model)
    values = sum(t.numel() for t in model.state_dict().values() if t.is_floating_point())
    return {
        "model": name, "dtype": dtype_name, "source": source, "float_values": values,
        "dense_fp32_safetensors_bytes": baseline, "nsk_dense_bytes": dense_nsk,
        "nsk_float_bytes_bytes": coded_nsk,
        "bits_per_value_dense": 8 * dense_nsk / values, "bits_per_value_float_bytes": 8 * coded_nsk / values,
        "gain_vs_nsk_dense": dense_nsk / coded_nsk, "ratio_vs_fp32_baseline": baseline / coded_nsk,
        "zlib9_raw_ratio": len(float_bytes) / len(zlib.compress(float_bytes, 9)),
        "save_s": save_s, "load_s": load_s,
    }


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in MODELS:
            for dtype_name in DTYPES:
                rows.append(measure(name, dtype_name, folder))
                print(rows[-1]["model"], rows[-1]["dtype"], f"{rows[-1]['gain_vs_nsk_dense']:.3f}x", flush=True)
    publish("lossless", results_doc("lossless", {"rows": rows}, []), markdown)


def markdown(doc: dict) -> str:
    """The lossless section of BENCHMARKS.md, from the results file alone."""
    lines = [
        "## Lossless float coding",
        "",
        "`python benchmarks/lossless.py`: real .nsk file sizes with every tensor stored "
        "dense against `float_bytes` allowed (exponent-plane entropy coding, ZipNN/DFloat11); bit-identical "
        "loads checked. Baseline: dense fp32 safetensors of the state dict. zlib -9 compresses the raw "
        "float bytes for reference.",
        "",
        "| model | source | dtype | values | .nsk dense B | .nsk float_bytes B | bits/value | gain | "
        "vs fp32 baseline | zlib -9 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["measurements"]["rows"]:
        lines.append(
            f"| {r['model']} | {r['source']} | {r['dtype']} | {r['float_values']} | {r['nsk_dense_bytes']} | "
            f"{r['nsk_float_bytes_bytes']} | {r['bits_per_value_float_bytes']:.2f} | "
            f"{r['gain_vs_nsk_dense']:.3f}x | {r['ratio_vs_fp32_baseline']:.3f}x | {r['zlib9_raw_ratio']:.3f}x |")
    return "\n".join(lines)

if __name__ == "__main__":
    main()
