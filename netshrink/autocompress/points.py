"""Search points: which to try next, how each is sized to its target, run and recorded.

A point is one allocation, trained and verified: its recipe is written to ``OUT/recipes/`` and run
by ``run_recipe`` into ``OUT/points/NNN/`` (resumable stage by stage, the test split unread),
and its record ``OUT/points/NNN.json`` is written atomically last, so a point counts as done only
when it is whole; a rerun skips the done ones.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from netshrink.autocompress.allocate import allocate, cheapest, predicted
from netshrink.autocompress.choices import Choice
from netshrink.autocompress.plan import recipe_for, write_recipe
from netshrink.autocompress.table import Context, apply_allocation, latency_of
from netshrink.core.files import write_atomically


@dataclasses.dataclass(frozen=True)
class PointSpec:
    """One point to try: the allocation sized to ``fraction`` of the budget's limit, chosen by
    the ``measure`` of sensitivity, recovered with ``recovery`` times the recovery epochs (0: a
    one-shot point, untrained)."""

    fraction: float
    measure: str = "kl"
    recovery: int = 1

    @property
    def label(self) -> str:
        training = "one-shot" if self.recovery == 0 else f"recovery x{self.recovery}"
        return f"{self.fraction:g} of the limit, {self.measure} sensitivity, {training}"


#: the order points are tried in until the time runs out: first a one-shot point at the limit
#: (cheap, so the search never ends with nothing), then the limit with recovery, then the front
#: around it (tighter and looser limits) alternating with other trade-offs at the limit (the
#: accuracy measure, longer recovery), and last the limit with long recovery (x8 is Deep
#: Compression's retraining length on LeNet-300-100 in ``recipes/``: 32 + 16 epochs), which a
#: time limit of an hour reaches on the zoo's small models
SCHEDULE = (
    PointSpec(1.0, "kl", 0), PointSpec(1.0, "kl", 1), PointSpec(0.8, "kl", 1), PointSpec(1.0, "accuracy", 1),
    PointSpec(1.25, "kl", 1), PointSpec(1.0, "kl", 2), PointSpec(0.65, "kl", 1), PointSpec(1.5, "kl", 1),
    PointSpec(1.0, "accuracy", 2), PointSpec(0.9, "kl", 2), PointSpec(0.5, "kl", 1), PointSpec(2.0, "kl", 1),
    PointSpec(1.0, "kl", 4), PointSpec(0.8, "kl", 2), PointSpec(1.0, "kl", 8), PointSpec(0.9, "kl", 8),
    PointSpec(1.0, "accuracy", 8), PointSpec(1.0, "kl", 16),
)
#: a text encoder's points (``text``: no training, so one-shot only, and the accuracy measure is
#: its cosine again): the limit, then tighter limits (the file of a calibrated point may come out a
#: little over its sizing) and the front around it
TEXT_SCHEDULE = tuple(PointSpec(fraction, "kl", 0) for fraction in
                      (1.0, 0.97, 0.94, 0.9, 0.85, 1.1, 0.8, 1.25, 0.7, 1.5, 0.6, 2.0))
_SIZING_ROUNDS = 8


def real_cost(ctx: Context, allocation: dict[str, Choice]) -> float:
    """The cost of ``allocation`` applied untrained to the original: the bytes of the file ``save``
    writes, the MACs, or the batch-1 latency (one thread)."""
    trial = apply_allocation(ctx, allocation)
    if ctx.kind == "macs":
        from netshrink.measure import count_macs

        return float(count_macs(trial, ctx.data.input_shape))
    if ctx.kind == "latency_ms":
        return latency_of(ctx, trial)
    from netshrink.codec.container import save

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "sized.nsk"
        save(trial, path)
        return float(path.stat().st_size)


def size_allocation(ctx: Context, table: dict[str, list[dict]], original_cost: float, target: float,
                    measure: str) -> tuple[dict[str, Choice], float, float]:
    """The allocation for ``target`` (least sensitivity whose real untrained cost fits), its
    predicted and its real cost. The table's costs add up only approximately (the file's log and
    header, neighbouring layers' channels), so the allocation is sized for real and the limit
    given to the integer program tightened by the overshoot until it fits, or the cheapest."""
    floor = cheapest(table)
    slack = 0.0
    for round_ in range(_SIZING_ROUNDS):
        allocation = allocate(table, target - original_cost - slack, measure, ctx.accuracy) or floor
        cost = real_cost(ctx, allocation)
        if cost <= target or allocation == floor:
            break
        slack += cost - target + 0.005 * abs(target) * round_
    return allocation, original_cost + predicted(table, allocation), cost


def run_point(recipe_file: str, folder: str) -> dict[str, Any]:
    """Run one point's recipe (a worker process's job) and return its verified measurements: the
    last stage's validation accuracy, file bytes and MACs (``measured_latency`` times it again
    in the search's process; a text encoder's fidelity is measured there too, its
    ``val_accuracy`` here is None)."""
    from netshrink.pipeline import load_recipe, run_recipe

    started = time.perf_counter()
    lines: list[str] = []
    report = run_recipe(load_recipe(recipe_file), folder, progress=False, log=lines.append, test=False)
    last = report["stages"][-1]
    return {"val_accuracy": last.get("val_accuracy"), "file_bytes": report["final"]["file_bytes"],
            "macs": last.get("macs", 0), "latency_ms": last.get("latency_ms", 0.0),
            "seconds": time.perf_counter() - started,
            "model_file": report["final"]["file"]}


def measured_latency(ctx: Context, recipe_file: str, model_file: str) -> float:
    """A point's batch-1 latency measured as the table's costs are (``table.latency_of``), here,
    so every point is timed alike."""
    from netshrink.pipeline import load_recipe
    from netshrink.pipeline.run import load_stage

    return latency_of(ctx, load_stage(Path(model_file), load_recipe(recipe_file)))


def recipe_of(index: int, stages: list[dict[str, Any]], model_table: dict[str, str],
              data_table: dict[str, Any]) -> dict[str, Any]:
    """Point ``index``'s recipe."""
    return recipe_for(f"auto-point-{index:03d}", model_table, data_table, stages)


def record_path(out: Path, index: int) -> Path:
    return out / "points" / f"{index:03d}.json"


def recipe_path(out: Path, index: int) -> Path:
    return out / "recipes" / f"point-{index:03d}.toml"


def finished(out: Path, index: int, key: dict[str, Any]) -> dict[str, Any] | None:
    """Point ``index``'s record when it was finished for the same ``key`` (spec, table, limit)."""
    path = record_path(out, index)
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    return record if record.get("key") == key else None


def save_record(out: Path, record: dict[str, Any]) -> None:
    write_atomically(record_path(out, record["index"]), json.dumps(record, indent=1).encode())


def write_point_recipe(out: Path, index: int, spec: PointSpec, recipe: dict[str, Any]) -> Path:
    path = recipe_path(out, index)
    write_recipe(path, recipe, f"netshrink auto, point {index}: {spec.label}.\n"
                               f"Reproduce: netshrink run {path} --out DIR")
    return path
