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


def results_doc(name: str, measurements: dict, targets: list[dict], date: str | None = None, **extra) -> dict:
    """A results file's content: the benchmark, the date (now, or the ``date`` a run began when it
    publishes more than once as its stages finish) and machine, its targets, ``extra`` facts
    (whatever its BENCHMARKS.md section reads besides the measurements) and the raw measurements."""
    return {
        "benchmark": name,
        "date": date or _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "targets": targets,
        **extra,
        "measurements": measurements,
    }


def git_line(*args: str) -> str:
    """One line of git's output about this checkout, or ``unknown`` outside one."""
    import subprocess

    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out or "unknown"


def history_entry(doc: dict, commit: str) -> dict:
    """One run of a benchmark as its results file's ``history`` keeps it: every target, missed ones
    included, with the date the run was measured and the commit it was published from."""
    return {"date": doc.get("date"), "commit": commit, "targets": doc.get("targets", [])}


def with_history(doc: dict, previous: dict | None, path: Path) -> dict:
    """``doc`` with its ``history``: the previous file's runs, never dropped, and this one appended.

    A previous file written before histories were kept counts as one run, published at the last
    commit that touched ``path``. A run is known by its date: republishing it unchanged adds
    nothing, and a run that publishes again as more of its stages finish replaces its own entry."""
    if previous is None:
        runs = list(doc.get("history", []))
    elif "history" in previous:
        runs = list(previous["history"])
    else:
        runs = [history_entry(previous, git_line("log", "-1", "--format=%h", "--", str(path)))]
    entry = json.loads(json.dumps(history_entry(doc, git_line("rev-parse", "--short", "HEAD"))))  # as read back
    same_run = [i for i, run in enumerate(runs) if run["date"] == entry["date"]]
    if not same_run:
        runs.append(entry)
    elif runs[same_run[-1]]["targets"] != entry["targets"]:
        runs[same_run[-1]] = entry
    return {**{key: value for key, value in doc.items() if key != "history"}, "history": runs}


def write_results(name: str, doc: dict) -> dict:
    """Write ``doc`` atomically as ``benchmarks/results/<name>.json``, its history kept and this run
    appended (:func:`with_history`); returns the file's content as a reader gets it back."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    previous = json.loads(path.read_text()) if path.exists() else None
    text = json.dumps(with_history(doc, previous, path), indent=2) + "\n"
    write_atomically(path, text.encode())
    return json.loads(text)


def seeded_target(name: str, values_per_seed: dict[int, float], goal: float, op: str) -> dict:
    """A target judged on several seeds: ``value`` is their mean, ``std`` the sample standard
    deviation (None from one seed), ``seeds`` and ``values`` the runs; ``met`` only when the mean
    meets ``goal``. See :func:`clear_by_three_std` for when one seed is enough."""
    import statistics

    if not values_per_seed:
        raise ValueError(f"{name}: no seeds to judge the target on")
    seeds, values = list(values_per_seed), [float(v) for v in values_per_seed.values()]
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else None
    return {**target(name, mean, goal, op), "std": std, "seeds": seeds, "values": values}


def clear_by_three_std(value: float, goal: float, std: float | None) -> bool:
    """Whether ``value`` is clear of the target line ``goal`` (on either side) by more than three
    standard deviations, ``std`` measured across seeds of the same setup. Where it is, one seed
    decides the target; otherwise it is judged on the mean of several (:func:`seeded_target`).
    An unmeasured std (None: one seed) never makes a target clear."""
    return std is not None and abs(value - goal) > 3 * std


def repo_path(path: Path) -> str:
    """``path`` as a section names it: relative to the repository root when inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def targets_markdown(targets: list[dict]) -> str:
    """The targets as a Markdown table, missed ones marked MISSED."""
    lines = ["| target | value | goal | met |", "|---|---|---|---|"]
    for t in targets:
        value = f"{t['value']:.4g}" if isinstance(t["value"], float) else str(t["value"])
        if "seeds" in t:  # a seeded_target: the mean, its spread and how many seeds
            spread = "" if t["std"] is None else f" ± {t['std']:.2g}"
            value += f"{spread} ({len(t['seeds'])} seed{'s' if len(t['seeds']) > 1 else ''})"
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


def mean_std(per_seed: dict, unit: str = "%") -> str:
    """Accuracies (fractions) over seeds in percent: ``mean%`` from one seed, ``mean% ± std`` from more."""
    import statistics

    values = [100 * v for v in per_seed.values()]
    spread = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
    return f"{statistics.fmean(values):.2f}{unit}{spread}"


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


def publish(name: str, doc: dict, markdown) -> None:
    """Write a finished results ``doc`` as ``benchmarks/results/<name>.json`` (:func:`write_results`)
    and ``markdown(doc)``, rendered from the file as written, as its BENCHMARKS.md section, then
    print the section. So a section never holds what its results file does not."""
    text = markdown(write_results(name, doc)).strip()
    update_benchmarks_md(name, text)
    print(text)


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
