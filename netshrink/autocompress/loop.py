"""The points of a search, tried in schedule order (``points.SCHEDULE``) while the time lasts.

The first point (one-shot, at the limit) always runs, so a search never ends with nothing; each
later one starts only when its estimated time, with a margin (``ESTIMATE_MARGIN``), fits in
what is left; one that does not is skipped, and a later point with less recovery may still run.
Points run ``jobs`` at a time in worker processes; each is sized here first (cheap), so the
workers only train.
"""

from __future__ import annotations

import concurrent.futures
import copy
import dataclasses
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from netshrink.autocompress import points as pts
from netshrink.autocompress.budget import UNITS
from netshrink.autocompress.plan import Recovery
from netshrink.autocompress.runtime import Clock
from netshrink.autocompress.table import Context, stages_of

#: a later point starts only when this many times its estimated time is left: the shared machine's
#: speed drifts by more than one point's estimate can see (auto.json run 3: MiniLM's fourth point,
#: estimated from the slowest point before it, ended 37 s past its hour)
ESTIMATE_MARGIN = 1.2


def starts_in_time(left: float, estimate: float) -> bool:
    """Whether a point estimated to take ``estimate`` seconds may start with ``left`` seconds left."""
    return left >= ESTIMATE_MARGIN * estimate


def _amount(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


class PointLoop:
    """Sizes, runs and records the points of one search (``records``: done and duplicate points)."""

    def __init__(self, out: Path, ctx: Context, table: dict[str, list[dict]], table_key: str, original_cost: float,
                 limit: float, recovery: Recovery, recipe_tables: tuple[dict[str, str], dict[str, Any]],
                 clock: Clock, log: Callable[[str], None], schedule: tuple[pts.PointSpec, ...] = pts.SCHEDULE) -> None:
        self.out, self.ctx, self.table, self.table_key = out, ctx, table, table_key
        self.original_cost, self.limit, self.recovery = original_cost, limit, recovery
        self.model_table, self.data_table = recipe_tables
        self.clock, self.log, self.schedule = clock, log, schedule
        self.records: list[dict[str, Any]] = []
        self.seen: set[str] = set()
        self.epoch_seconds: float | None = None

    @property
    def points(self) -> list[dict[str, Any]]:
        """Every verified point (duplicates left out), in the order tried."""
        return sorted((r for r in self.records if "duplicate_of" not in r), key=lambda r: r["index"])

    def run(self, jobs: int, pool: concurrent.futures.Executor | None) -> str:
        """Try the schedule's points, ``jobs`` at a time in ``pool`` (or here when None); returns
        why the search stopped."""
        running: dict[concurrent.futures.Future, dict[str, Any]] = {}
        skipped = 0
        for index, spec in enumerate(self.schedule):
            key = {"spec": dataclasses.asdict(spec), "table": self.table_key, "limit": self.limit,
                   "recovery": dataclasses.asdict(self.recovery)}
            done = pts.finished(self.out, index, key)
            if done is not None:
                self._keep(done, reused=True)
                continue
            while len(running) >= jobs:
                self._collect(running, concurrent.futures.FIRST_COMPLETED)
            if spec.recovery > 0 and self._growth_point() is None and any(
                    r["spec"]["recovery"] > 0 for r in running.values()):
                self._collect(running, concurrent.futures.ALL_COMPLETED)  # its growth sizes this one
            if (self.points or running) and not starts_in_time(self.clock.left(), self.estimate(spec)):
                skipped += 1  # a point with less recovery later in the schedule may still fit
                continue
            record = self._prepare(index, spec, key)
            if record is None:
                continue
            if pool is None:
                self._done(record, pts.run_point(record["recipe_file"], record["folder"]))
            else:
                running[pool.submit(pts.run_point, record["recipe_file"], record["folder"])] = record
        self._collect(running, concurrent.futures.ALL_COMPLETED)
        if skipped:
            return f"time limit reached ({skipped} scheduled point(s) would not have finished in time)"
        return f"all {len(self.schedule)} scheduled points tried"

    def _prepare(self, index: int, spec: pts.PointSpec, key: dict[str, Any]) -> dict[str, Any] | None:
        """Size the point's allocation and write its recipe; None for a point equal to an earlier one."""
        started = time.perf_counter()
        target = spec.fraction * self.limit / self.growth(spec)
        allocation, predicted, sized = pts.size_allocation(self.ctx, self.table, self.original_cost, target,
                                                           spec.measure)
        stages = stages_of(self.ctx, allocation, self.recovery.scaled(spec.recovery))
        recipe = pts.recipe_of(index, stages, self.model_table, self.data_table)
        self.clock.add("sizing", time.perf_counter() - started)
        signature = json.dumps(recipe["stages"], sort_keys=True)
        if signature in self.seen:
            record = {"index": index, "key": key, "duplicate_of": signature}
            pts.save_record(self.out, record)
            self.records.append(record)
            return None
        self.seen.add(signature)
        recipe_file = pts.write_point_recipe(self.out, index, spec, recipe)
        unit = UNITS[self.ctx.kind]
        self.log(f"point {index}: {spec.label}; predicted {_amount(predicted)} {unit}, untrained {_amount(sized)} "
                 f"{unit} (target {_amount(target)})")
        return {"index": index, "key": key, "label": spec.label, "spec": dataclasses.asdict(spec),
                "allocation": {layer: c.to_dict() for layer, c in allocation.items()}, "recipe": recipe,
                "recipe_file": str(recipe_file), "folder": str(self.out / "points" / f"{index:03d}"),
                "predicted_cost": predicted, "untrained_cost": sized}

    def _growth_point(self) -> dict[str, Any] | None:
        """The first trained point, once done: the one whose growth sizes the later ones."""
        return next((r for r in self.points if r["spec"]["recovery"] > 0), None)

    def growth(self, spec: pts.PointSpec) -> float:
        """How much training grows a point's file over its untrained sizing (fine-tuned weights code
        less well: LeNet-300-100's points at the limit came out about 8% over it), as the first
        trained point measured it (so the sizing of every later point is the same whatever ran in
        parallel); 1 for a one-shot point, before that point is done, and for latency and MACs.
        Trained points are sized to ``fraction * limit / growth``, so they land at their fraction."""
        first = self._growth_point()
        if spec.recovery == 0 or self.ctx.kind != "bytes" or first is None:
            return 1.0
        return max(1.0, first["cost"] / first["untrained_cost"])

    def _done(self, record: dict[str, Any], measured: dict[str, Any]) -> None:
        record.update(measured)
        if self.ctx.text is not None:  # fidelity on the validation passages (the recipe measures none)
            started = time.perf_counter()
            record["val_accuracy"] = self.ctx.text.fidelity(self.ctx.model, record["model_file"])
            record["seconds"] += time.perf_counter() - started
        else:
            record["latency_ms"] = pts.measured_latency(self.ctx, record["recipe_file"], record["model_file"])
        record["cost"] = float({"bytes": record["file_bytes"], "macs": record["macs"],
                                "latency_ms": record["latency_ms"]}[self.ctx.kind])
        pts.save_record(self.out, record)
        self.clock.add("points", record["seconds"])
        self._keep(record, reused=False)

    def _keep(self, record: dict[str, Any], reused: bool) -> None:
        self.records.append(record)
        if "duplicate_of" in record:
            return
        self.seen.add(json.dumps(record["recipe"]["stages"], sort_keys=True))
        self.log(f"point {record['index']}{' (reused)' if reused else ''}: val accuracy {record['val_accuracy']:.4f}, "
                 f"{record['file_bytes']:,} bytes, {record['macs']:,} MACs, {record['latency_ms']:.3f} ms "
                 f"({record['seconds']:.0f} s)")

    def _collect(self, running: dict, how: str) -> None:
        if running:
            finished, _ = concurrent.futures.wait(running, return_when=how)
            for future in finished:
                self._done(running.pop(future), future.result())

    def estimate(self, spec: pts.PointSpec) -> float:
        """Seconds point ``spec`` will take: from the trained points so far, or for the first one, a
        one-shot point's time plus its epochs at a measured step time. A one-shot point takes as
        long as the longest before it (0 for the first: it always runs)."""
        if spec.recovery == 0:
            return max((r["seconds"] for r in self.points if r["spec"]["recovery"] == 0), default=0.0)
        trained = [r for r in self.points if r["spec"]["recovery"] > 0]
        if trained:
            return max(r["seconds"] / r["spec"]["recovery"] for r in trained) * spec.recovery
        shot = max((r["seconds"] for r in self.points), default=0.0)
        # only a size budget's points cluster (latency and MACs budgets choose channel amounts alone)
        epochs = self.recovery.epochs + (self.recovery.cluster_epochs if self.ctx.kind == "bytes" else 0)
        return shot + epochs * spec.recovery * self._epoch_seconds()

    def _epoch_seconds(self) -> float:
        """One fine-tuning epoch: three timed steps of the original at the recovery batch size,
        after one untimed step (the first pays for allocation and kernel set-up)."""
        if self.epoch_seconds is None:
            model = copy.deepcopy(self.ctx.model).train()
            optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
            x = self.ctx.data.train.x[:self.recovery.batch_size]
            y = self.ctx.data.train.y[:self.recovery.batch_size]

            def train_step() -> None:
                optimizer.zero_grad()
                torch.nn.functional.cross_entropy(model(x), y).backward()
                optimizer.step()

            train_step()
            started = time.perf_counter()
            for _ in range(3):
                train_step()
            step = (time.perf_counter() - started) / 3
            self.epoch_seconds = step * math.ceil(len(self.ctx.data.train) / self.recovery.batch_size)
        return self.epoch_seconds
