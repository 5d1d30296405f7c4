"""Shared by every benchmark: machine facts, the results JSON, and BENCHMARKS.md sections."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
from pathlib import Path

from netshrink.core.files import write_atomically

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
CHECKPOINTS = ROOT / "benchmarks" / "checkpoints"
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"


def machine_info() -> dict:
    """What the numbers were measured on."""
    import numpy
    import torch

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def target(name: str, value: float, goal: float, op: str) -> dict:
    """One entry of a results file's ``targets`` list; ``met`` is computed, never typed in."""
    if op not in (">=", "<="):
        raise ValueError(f"op must be '>=' or '<=', got {op!r}")
    met = value >= goal if op == ">=" else value <= goal
    return {"name": name, "value": value, "target": goal, "op": op, "met": bool(met)}


def write_results(name: str, measurements: dict, targets: list[dict], **extra) -> Path:
    """Write ``benchmarks/results/<name>.json`` atomically with machine, date, targets, raw data."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": name,
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "targets": targets,
        **extra,
        "measurements": measurements,
    }
    path = RESULTS / f"{name}.json"
    write_atomically(path, (json.dumps(doc, indent=2) + "\n").encode())
    return path


def targets_markdown(targets: list[dict]) -> str:
    """The targets as a Markdown table, missed ones marked MISSED."""
    lines = ["| target | value | goal | met |", "|---|---|---|---|"]
    for t in targets:
        value = f"{t['value']:.4g}" if isinstance(t["value"], float) else str(t["value"])
        lines.append(f"| {t['name']} | {value} | {t['op']} {t['target']} | "
                     f"{'yes' if t['met'] else '**MISSED**'} |")
    return "\n".join(lines)


def update_benchmarks_md(section: str, markdown: str) -> None:
    """Replace (or append) the section between ``<!-- begin:section -->`` and ``<!-- end:... -->``."""
    begin, end = f"<!-- begin:{section} -->", f"<!-- end:{section} -->"
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else (
        "# Benchmarks\n\nEvery figure below is measured by the script named in its section; the raw "
        "numbers, the machine and the date are in `benchmarks/results/*.json`.\n")
    block = f"{begin}\n{markdown.strip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    write_atomically(BENCHMARKS_MD, text.encode())


def gap_closure(student: float, alone: float, teacher: float) -> float | None:
    """The share of the alone-to-teacher test-accuracy gap a distilled student closes; None when the
    teacher is not ahead of the student alone (there is no gap to close)."""
    return (student - alone) / (teacher - alone) if teacher > alone else None


def percent(share: float | None) -> str:
    """``12%``, or ``n/a`` for an undefined share."""
    return "n/a" if share is None else f"{share * 100:.0f}%"


def exit_with_parent(poll_s: float = 5.0) -> None:
    """In a pool worker: end this process once the process that started it is gone. A killed
    benchmark's ``ProcessPoolExecutor`` workers otherwise train on, writing into its run folders
    beside a restarted run."""
    import threading
    import time

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


def publish(name: str, doc: dict, markdown: str) -> None:
    """Write a finished results ``doc`` as ``benchmarks/results/<name>.json`` and ``markdown`` as its
    BENCHMARKS.md section, then print the section."""
    write_atomically(RESULTS / f"{name}.json", (json.dumps(doc, indent=2) + "\n").encode())
    update_benchmarks_md(name, markdown)
    print(markdown)


def fine_tune(model, data, config, teacher=None, distill_config=None, logits_dir=None, callbacks=()):
    """``fit``'s result after training ``model`` on the labels, or, with a ``teacher``, distilled from
    it (``netshrink.distillation.distill`` with ``distill_config``; its teacher-logit cache kept in
    ``logits_dir``, a temporary folder when None, so candidates sharing a folder compute it once)."""
    import contextlib
    import tempfile

    from netshrink.distillation import distill
    from netshrink.train import fit

    if teacher is None:
        return fit(model, data, config, callbacks=callbacks, progress=False)
    folder = tempfile.TemporaryDirectory() if logits_dir is None else contextlib.nullcontext(logits_dir)
    with folder as out_dir:
        return distill(model, teacher, data, distill_config, config, out_dir=out_dir, callbacks=callbacks,
                       progress=False)


def quick_subset(data, sizes: dict[str, int]):
    """``data`` with each named split cut to its first ``sizes[name]`` samples (``--quick`` runs)."""
    import dataclasses

    from netshrink.data import Split

    cut = {name: Split(getattr(data, name).x[:n], getattr(data, name).y[:n]) for name, n in sizes.items()}
    return dataclasses.replace(data, **cut)
