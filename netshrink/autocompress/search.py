"""``auto``: compress a model to a budget, choosing techniques and per-layer settings itself.

1. The original is written to ``OUT/original.nsk``: the model every point's recipe starts from.
2. The per-layer table (``table``, ``table_store``): each candidate's sensitivity and cost, one
   layer at a time, persisted per layer, measured in ``jobs`` processes.
3. Points (``loop``, ``points.SCHEDULE``), until the time runs out: an allocation by integer
   program (``allocate``) sized for real to its target, written as a recipe, trained and verified
   on validation by ``run_recipe``, recorded in ``OUT/points/``.
4. The result (``result``): the best point meeting the budget or the closest, the Pareto front,
   ``OUT/model.nsk`` and ``OUT/recipe.toml`` (the chosen point's), ``OUT/result.json`` and
   ``OUT/report.html``.

A rerun into the same ``OUT`` resumes: finished layers and points are reused, and the time limit
counts the time spent before.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from netshrink.autocompress import inputs
from netshrink.autocompress import points as pts
from netshrink.autocompress.budget import UNITS, Budget
from netshrink.autocompress.choices import Choice, SearchSpace, candidate_layers
from netshrink.autocompress.loop import PointLoop
from netshrink.autocompress.plan import Recovery
from netshrink.autocompress.result import AutoResult, choose, pareto_front
from netshrink.autocompress.runtime import Clock, worker_pool
from netshrink.autocompress.table import Context, Setting, context
from netshrink.autocompress.table_store import build_table, check_table_time, stored_rows, table_key
from netshrink.core.errors import ConfigError
from netshrink.core.files import write_atomically

DEFAULT_RECOVERY = Recovery()
DEFAULT_SPACE = SearchSpace()


def auto(model: nn.Module, data: Any, budget: Budget, out: str | os.PathLike, *,
         recovery: Recovery = DEFAULT_RECOVERY, space: SearchSpace = DEFAULT_SPACE, jobs: int = 1,
         builder: str | None = None, calibration_samples: int = 512, hand: Sequence[Any] = (),
         schedule: Sequence[pts.PointSpec] = pts.SCHEDULE, log: Callable[[str], None] = print) -> AutoResult:
    """Compress ``model`` to ``budget``; returns the chosen point, the front and every point.

    Args:
        model: a trained model (a zoo model, or a user's class: see ``builder``), finalized.
        data: what ``load_dataset`` reads (``"digits"``, ``"fashion-mnist"``, a .npz path or an
            image folder), a ``{"name", "dir", "val_fraction"}`` table, or a ``Dataset`` it loaded.
            Every choice is made on its validation split; the test split is never read.
        budget: the cost limit, the accuracy drop allowed and the time limit.
        out: the output folder (a rerun into it resumes).
        recovery: the fine-tuning after each point's compression (scaled per point).
        space: the candidate settings of each layer.
        jobs: processes measuring layers and running points at once.
        builder: for a user's class, ``"package.module:function"`` returning an untrained model of
            it, which the recipes use (default: the class itself, when it imports and takes no
            arguments).
        calibration_samples: validation samples the sensitivities are measured on.
        hand: hand recipes' points for the report: ``netshrink run`` report.json paths or
            ``{"label", "cost", "val_accuracy"}`` dicts.
        schedule: the points tried, in order, while the time lasts (``points.SCHEDULE``: a
            one-shot point at the limit first, then trained points at and around it).
        log: where progress lines go.

    Raises ``ConfigError`` (one line) for an impossible budget, a time limit too short for the
    table (``TimeLimitError``), a model with no layer any family applies to, and other bad input.
    A time limit too short for one trained point gives the one-shot point, with ``partial`` set.

    Example:
        >>> result = auto(model, "fashion-mnist", Budget(max_bytes="45x", max_drop=0.5, time_limit="60m"), "runs/a")
        >>> result.chosen["recipe_file"], result.met
    """
    if not isinstance(budget, Budget):
        raise ConfigError(f"budget must be a Budget, got {type(budget).__name__}")
    if not schedule or not all(isinstance(spec, pts.PointSpec) for spec in schedule):
        raise ConfigError("schedule must be a non-empty sequence of PointSpec")
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for name, value in (("jobs", jobs), ("calibration_samples", calibration_samples)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
    hand_found = inputs.hand_points(hand, budget.kind)
    out = Path(out).resolve()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out {out} is a file; give a folder")
    data_table = inputs.data_table(data)
    model_table = inputs.model_table(model, builder, out / inputs.ORIGINAL)
    fresh = not (out / inputs.STATE).exists()
    digest = inputs.write_original(model, out, model_table.get("builder"), data_table)
    setting = Setting(digest, tuple(sorted(model_table.items())),
                      tuple(sorted(data_table.items())), budget.kind, calibration_samples)
    clock = Clock(out, budget.time_limit)
    try:  # refusals come before any measurement is stored; a refused new folder is left as it was
        ctx = context(setting)
        layers = candidate_layers(ctx.model, budget.kind)
        if not layers:
            raise ConfigError(_no_layers(ctx.model, budget.kind))
        original = _original(ctx, out, digest)
        limit = budget.limit(original["dense_fp32_bytes"] if budget.kind == "bytes" else original[budget.kind])
        _check_possible(ctx, layers, space, budget, limit)
        choices = space.choices(budget.kind)
        key = table_key(setting, choices)
        check_table_time(setting, [layer for _, layer in stored_rows(out, key, layers)[1]], choices, jobs, clock)
    except ConfigError:
        if fresh:
            inputs.forget_original(out)
        raise
    with worker_pool(jobs) as pool:  # one pool: a worker keeps its context from the table to the points
        table = build_table(out, setting, key, layers, choices, pool, clock, log)
        log(f"table: {len(layers)} layer(s) x {len(choices)} candidates ({clock.spent_on('table'):.0f} s)")
        original_cost = original["file_bytes"] if budget.kind == "bytes" else original[budget.kind]
        loop = PointLoop(out, ctx, table, key, original_cost, limit, recovery,
                         (model_table, data_table), clock, log, tuple(schedule))
        stopped = loop.run(jobs, pool)
    return _finish(loop, budget, limit, original, stopped, recovery, hand_found, log)


def _no_layers(model: nn.Module, kind: str) -> str:
    what = ("Linear or Conv layer" if kind == "bytes"
            else "layer whose output channels can be removed (the only change that moves latency or dense MACs)")
    return (f"{type(model).__name__} has no {what}: no family auto searches applies to it (transformers' "
            "attention and embeddings are not searched yet)")


def _original(ctx: Context, out: Path, digest: str) -> dict[str, Any]:
    """The original's validation accuracy, dense fp32 bytes, .nsk bytes, MACs and latency, measured
    once per original file (``OUT/search/original.json``): a resumed search keeps the same limit
    even where it is a rate of a measured latency."""
    from netshrink.measure import count_macs, evaluate
    from netshrink.measure.latency import measure_latency
    from netshrink.measure.size import fp32_baseline

    path = out / "search" / "original.json"
    stored = json.loads(path.read_text()) if path.exists() else {}
    if stored.get("sha256") == digest:
        return stored["measured"]
    latency = measure_latency(ctx.model, ctx.data.input_shape, 1, 1, repeats=pts.LATENCY_REPEATS, inputs=ctx.x)
    measured = {"val_accuracy": evaluate(ctx.model, ctx.data.val), "dense_fp32_bytes": fp32_baseline(ctx.model).nbytes,
                "file_bytes": (out / inputs.ORIGINAL).stat().st_size,
                "macs": count_macs(ctx.model, ctx.data.input_shape), "latency_ms": latency["median_ms"]}
    write_atomically(path, json.dumps({"sha256": digest, "measured": measured}).encode())
    return measured


def _extremes(layers: list[str], space: SearchSpace, kind: str) -> list[dict[str, Choice]]:
    """The allocations that cost least: every layer at the most sparsity and fewest bits of each
    grid, or the most channels removed."""
    if kind != "bytes":
        return [dict.fromkeys(layers, Choice(amount=max(space.amounts)))] if space.amounts else []
    grids = [("cluster", min(space.cluster_bits))] if space.cluster_bits else []
    grids += [("int", min(space.int_bits))] if space.int_bits else []
    return [dict.fromkeys(layers, Choice(sparsity=max(space.sparsities), values=v, bits=b)) for v, b in grids]


def _check_possible(ctx: Context, layers: list[str], space: SearchSpace, budget: Budget, limit: float) -> None:
    """Refuse, before the table is measured, a limit below what the cheapest allocations reach."""
    extremes = _extremes(layers, space, budget.kind)
    if not extremes:
        raise ConfigError(f"the search space has no candidate for a {budget.field} budget; give it some")
    least = min(pts.real_cost(ctx, allocation) for allocation in extremes)
    if least > limit:
        unit = UNITS[budget.kind]
        raise ConfigError(f"{budget.field} of {_amount(limit)} {unit} is impossible: the least this search reaches "
                          f"is {_amount(least)} {unit} (every layer at its cheapest setting); raise it")


def _amount(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _finish(loop: PointLoop, budget: Budget, limit: float, original: dict[str, Any], stopped: str,
            recovery: Recovery, hand: list[dict[str, Any]], log: Callable[[str], None]) -> AutoResult:
    """The result and its files: ``model.nsk``, ``recipe.toml``, ``result.json``, ``report.html``."""
    from netshrink.autocompress.report import write_auto_report

    out, found = loop.out, loop.points
    for point in found:
        point["drop"] = 100 * (original["val_accuracy"] - point["val_accuracy"])
    chosen, failed = choose(found, budget, limit)
    partial = None
    if recovery.epochs + recovery.cluster_epochs > 0 and not any(p["spec"]["recovery"] for p in found):
        partial = (f"time_limit {budget.time_limit:g} s is too short for one point with recovery training "
                   f"(about {loop.estimate(pts.PointSpec(1.0)):.0f} s more were needed); the result is the one-shot "
                   "point, untrained")
        stopped = "time limit too short for one trained point"
    loop.clock.save()
    seconds = {part: loop.clock.spent_on(part) for part in ("table", "sizing", "points")}
    seconds["total"] = loop.clock.spent()
    result = AutoResult(out, budget, limit, original, found, pareto_front(found), chosen, not failed, failed,
                        seconds, stopped, partial)
    staged = out / ".model.nsk.new"
    shutil.copyfile(chosen["model_file"], staged)
    os.replace(staged, out / "model.nsk")
    write_atomically(out / "recipe.toml", Path(chosen["recipe_file"]).read_bytes())
    write_atomically(out / "result.json", json.dumps(result.to_dict(), indent=1).encode())
    write_auto_report(result, hand, out / "report.html")
    log(result.summary())
    return result
