"""Resumable benchmark stages: each stage's result kept as ``<root>/<name>.json`` with its seconds.

A benchmark on a shared 2-core CPU runs for an hour or more; a killed run must continue where it
stopped, and its wall-time target must still count every stage it reports, run now or in an
earlier invocation. ``Stages.stage`` does both: a finished stage is read back (with the seconds it
took when it ran), an unfinished one is run and kept atomically. ``minutes()`` sums the seconds
of every stage reported, the figure the issues' "whole benchmark fits in N minutes" targets use.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from netshrink.core.files import write_atomically


class Stages:
    """The stage cache of one benchmark invocation.

    Args:
        root: folder of the ``<name>.json`` results (created).
        fresh: recompute every stage, ignoring kept results.
        cached_only: run nothing; a stage not finished is reported as None and named in ``missing``.
    """

    def __init__(self, root: Path, fresh: bool = False, cached_only: bool = False) -> None:
        self.root, self.fresh, self.cached_only = Path(root), fresh, cached_only
        self.results: dict[str, dict] = {}  # each reported stage's result, run now or before
        self.missing: list[str] = []
        self.root.mkdir(parents=True, exist_ok=True)

    @property
    def seconds(self) -> dict[str, float]:
        """Each reported stage's seconds, when it ran."""
        return {name: result["seconds"] for name, result in self.results.items()}

    def path(self, name: str) -> Path:
        return self.root / f"{name}.json"

    def finished(self, name: str) -> dict | None:
        """The kept result of stage ``name`` (reported: counted in ``seconds``), or None."""
        path = self.path(name)
        if not path.exists():
            return None
        self.results[name] = json.loads(path.read_text())
        return self.results[name]

    def stage(self, name: str, work: Callable[[], dict]) -> dict | None:
        """The kept result of stage ``name``, or ``work()``'s, kept with ``seconds`` and the load
        average at its start (absolute times on a shared CPU need it beside them)."""
        if not self.fresh and (result := self.finished(name)) is not None:
            print(f"[{name}] cached", flush=True)
            return result
        if self.cached_only:
            print(f"[{name}] not finished, skipped (cached only)", flush=True)
            self.missing.append(name)
            return None
        print(f"[{name}] running", flush=True)
        load, began = os.getloadavg()[0], time.perf_counter()
        result = work()
        result["seconds"] = time.perf_counter() - began
        result["loadavg_at_start"] = load
        write_atomically(self.path(name), (json.dumps(result, indent=2) + "\n").encode())
        print(f"[{name}] {result['seconds']:.0f} s", flush=True)
        self.results[name] = result
        return result

    def minutes(self) -> float:
        """Minutes of every stage reported so far, summed."""
        return sum(self.seconds.values()) / 60
