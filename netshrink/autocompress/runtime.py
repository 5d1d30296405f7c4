"""The search's time and processes: a time limit that spans resumed runs, and the worker pool."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import multiprocessing
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from netshrink.core.files import write_atomically


class Clock:
    """The time limit over every run into ``OUT`` (``OUT/search/time.json`` keeps what earlier runs
    spent) and the time spent on each part (``table``, ``sizing``, ``points``)."""

    def __init__(self, out: Path, limit: float) -> None:
        self.path = out / "search" / "time.json"
        before = json.loads(self.path.read_text()) if self.path.exists() else {"total": 0.0, "parts": {}}
        self.limit, self.before, self.started = limit, float(before["total"]), time.perf_counter()
        self.parts: dict[str, float] = dict(before["parts"])

    def spent(self) -> float:
        return self.before + time.perf_counter() - self.started

    def left(self) -> float:
        return self.limit - self.spent()

    def add(self, part: str, seconds: float) -> None:
        """Count ``seconds`` for ``part`` and persist the totals."""
        self.parts[part] = self.parts.get(part, 0.0) + seconds
        self.save()

    def spent_on(self, part: str) -> float:
        return self.parts.get(part, 0.0)

    def save(self) -> None:
        write_atomically(self.path, json.dumps({"total": self.spent(), "parts": self.parts}).encode())


@contextlib.contextmanager
def worker_pool(jobs: int) -> Iterator[concurrent.futures.ProcessPoolExecutor | None]:
    """``jobs`` worker processes, one torch thread each; None for one job: everything runs in this
    process. Workers are forked from a fork server that has imported torch and the table's module
    once (a fork of this process is not safe: its torch may hold threads), so each starts without
    importing torch again, as a spawned one would."""
    if jobs == 1:
        yield None
        return
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["torch", "netshrink.autocompress.table"])
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context, initializer=torch.set_num_threads,
                                                initargs=(1,)) as pool:
        yield pool
