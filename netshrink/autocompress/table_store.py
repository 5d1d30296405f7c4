"""A search's table, every layer's rows (``table.measure_layer``), persisted and measured in parallel.

Each layer's rows are written atomically to ``OUT/search/table/NNN.json`` under a key of what they
depend on (the original file, the data, the budget's kind, the calibration samples, the
candidates), so a resumed search reuses every layer measured before and measures the rest.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

from netshrink.autocompress.choices import Choice
from netshrink.autocompress.runtime import Clock
from netshrink.autocompress.table import Setting, context, measure_choice, measure_layer
from netshrink.core.errors import ConfigError
from netshrink.core.files import write_atomically

TABLE_VERSION = 2
Table = dict[str, list[dict]]


class TimeLimitError(ConfigError):
    """The time limit is too short for even the first measurements."""


def table_key(setting: Setting, choices: list[Choice]) -> str:
    """SHA-256 of everything a table's rows depend on."""
    value = {"version": TABLE_VERSION, "original": setting.original_sha256, "data": setting.data_table,
             "kind": setting.kind, "samples": setting.samples, "choices": [c.to_dict() for c in choices]}
    if setting.space is not None:
        value["space"] = repr(setting.space)
    if setting.kind == "latency_ms":  # costs in ms on the scale of this search's one reference time
        value.update(runtime=setting.runtime, reference_ms=setting.latency_ms)
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def stored_rows(out: Path, key: str, layers: list[str]) -> tuple[Table, list[tuple[int, str]]]:
    """The rows stored under ``key`` by layer, and the ``(index, layer)`` still to measure."""
    table: Table = {}
    pending = []
    for index, layer in enumerate(layers):
        path = out / "search" / "table" / f"{index:03d}.json"
        stored = json.loads(path.read_text()) if path.exists() else None
        if stored is not None and stored["key"] == key and stored["layer"] == layer:
            table[layer] = stored["rows"]
        else:
            pending.append((index, layer))
    return table, pending


def build_table(out: Path, setting: Setting, key: str, layers: list[str], choices: list[Choice],
                pool: concurrent.futures.Executor | None, clock: Clock, log: Callable[[str], None]) -> Table:
    """Every layer's rows, in layer order: those stored under ``key`` reused, the rest measured
    (in ``pool``'s processes, or here when None) and stored as each layer finishes."""
    table, pending = stored_rows(out, key, layers)
    if not pending:
        log("table: measured before (reused)")
    candidates = [c.to_dict() for c in choices]
    started = time.perf_counter()
    if pool is None:
        results = ((index, layer, measure_layer(setting, layer, candidates)) for index, layer in pending)
    else:
        futures = {pool.submit(measure_layer, setting, layer, candidates): (index, layer) for index, layer in pending}
        results = ((*futures[f], f.result()) for f in concurrent.futures.as_completed(futures))
    for index, layer, rows in results:
        table[layer] = rows
        write_atomically(out / "search" / "table" / f"{index:03d}.json",
                         json.dumps({"key": key, "layer": layer, "rows": rows}).encode())
        log(f"table: {layer} measured ({len(rows)} candidates)")
        clock.add("table", time.perf_counter() - started)
        started = time.perf_counter()
    return {layer: table[layer] for layer in layers}


def check_table_time(setting: Setting, pending: list[str], choices: list[Choice], jobs: int, clock: Clock) -> None:
    """Refuse a time limit shorter than the table will take: one candidate of the largest and of
    the smallest layer still to measure, timed, each other layer's time between them in proportion
    to its parameters, times the candidates, shared by the jobs. (A text encoder's largest layer,
    its word embedding, takes far longer than each of its many Linear layers.)"""
    if not pending:
        return
    ctx = context(setting)
    modules = dict(ctx.model.named_modules())
    size = {name: sum(p.numel() for p in modules[name].parameters()) for name in pending}
    ends = sorted(dict.fromkeys([max(pending, key=size.__getitem__), min(pending, key=size.__getitem__)]),
                  key=size.__getitem__)
    seconds = []
    for layer in ends:
        started = time.perf_counter()
        measure_choice(ctx, layer, choices[-1])
        seconds.append(time.perf_counter() - started)
    small, large = size[ends[0]], size[ends[-1]]
    slope = (seconds[-1] - seconds[0]) / (large - small) if large > small else 0.0
    needed = sum(seconds[0] + slope * (size[name] - small) for name in pending) * len(choices) / jobs
    if needed > clock.left():
        raise TimeLimitError(f"time_limit {clock.limit:g} s is too short: measuring the layers' candidates "
                             f"alone takes about {needed:.0f} s ({len(pending)} layers x {len(choices)} candidates); "
                             f"give at least {math.ceil(needed / 60 + 1)}m")
