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
counts the time spent before. A Hugging Face text encoder given by name runs the same steps with
fidelity to the original in place of accuracy (``text``).
"""

from __future__ import annotations

import dataclasses
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
from netshrink.autocompress.plan import NO_TRAINING, Recovery
from netshrink.autocompress.result import AutoResult, choose, pareto_front
from netshrink.autocompress.runtime import Clock, worker_pool
from netshrink.autocompress.table import Context, Setting, context
from netshrink.autocompress.table_store import build_table, check_table_time, stored_rows, table_key
from netshrink.autocompress.text import TextSpace, is_text_model
from netshrink.core.errors import ConfigError
from netshrink.core.files import write_atomically

DEFAULT_RECOVERY = Recovery()
DEFAULT_SPACE = SearchSpace()
DEFAULT_TEXT_SPACE = TextSpace()
#: calibration samples of the table by default: validation images, or a text encoder's passages
DEFAULT_SAMPLES = {"images": 512, "text": 32}


def auto(model: nn.Module | str, data: Any, budget: Budget, out: str | os.PathLike, *,
         recovery: Recovery = DEFAULT_RECOVERY, space: SearchSpace | TextSpace | None = None, jobs: int = 1,
         builder: str | None = None, calibration_samples: int | None = None, hand: Sequence[Any] = (),
         schedule: Sequence[pts.PointSpec] | None = None, log: Callable[[str], None] = print) -> AutoResult:
    """Compress ``model`` to ``budget``; returns the chosen point, the front and every point.

    Args:
        model: a trained model (a zoo model, or a user's class: see ``builder``), finalized; or a
            Hugging Face text encoder by name, ``"minilm"`` or ``"hf:PATH"`` (``text``).
        data: what ``load_dataset`` reads (``"digits"``, ``"fashion-mnist"``, a .npz path or an
            image folder), a ``{"name", "dir", "val_fraction"}`` table, or a ``Dataset`` it loaded.
            Every choice is made on its validation split; the test split is never read. For a
            text encoder: its text, a .txt file (one passage a line, split once into calibration
            and validation passages, ``val_fraction`` 0.2) or ``{"text": FILE, "validation":
            FILE}``; its fidelity, in place of accuracy, is the mean cosine between the sentence
            embeddings of the compressed model and the original's on the validation passages
            (the original's is 1.0, 100%), so ``budget.max_drop=2.0`` asks for a cosine >= 0.98.
        budget: the cost limit, the accuracy drop allowed and the time limit (a text encoder's:
            ``max_bytes``).
        out: the output folder (a rerun into it resumes).
        recovery: the fine-tuning after each point's compression (scaled per point); a text
            encoder's points are not trained.
        space: the candidate settings of each layer (default ``SearchSpace()``, for a text
            encoder ``TextSpace()``).
        jobs: processes measuring layers and running points at once.
        builder: for a user's class, ``"package.module:function"`` returning an untrained model of
            it, which the recipes use (default: the class itself, when it imports and takes no
            arguments).
        calibration_samples: validation samples the sensitivities are measured on (default 512),
            for a text encoder calibration passages (default 32).
        hand: hand recipes' points for the report: ``netshrink run`` report.json paths or
            ``{"label", "cost", "val_accuracy"}`` dicts.
        schedule: the points tried, in order, while the time lasts (default ``points.SCHEDULE``:
            a one-shot point at the limit first, then trained points at and around it; for a
            text encoder ``points.TEXT_SCHEDULE``, one-shot points at and around the limit).
        log: where progress lines go.

    Raises ``ConfigError`` (one line) for an impossible budget, a time limit too short for the
    table (``TimeLimitError``), a model with no layer any family applies to, and other bad input.
    A time limit too short for one trained point gives the one-shot point, with ``partial`` set.

    Example:
        >>> result = auto(model, "fashion-mnist", Budget(max_bytes="45x", max_drop=0.5, time_limit="60m"), "runs/a")
        >>> result.chosen["recipe_file"], result.met
        >>> auto("minilm", {"text": "calibration.txt", "validation": "validation.txt"},
        ...      Budget(max_bytes="8x", max_drop=2.0, time_limit="60m"), "runs/minilm")
    """
    if not isinstance(budget, Budget):
        raise ConfigError(f"budget must be a Budget, got {type(budget).__name__}")
    text = isinstance(model, str)
    if text and not is_text_model(model):
        raise ConfigError(f"model {model!r}: give a torch.nn.Module, or a text encoder by name (minilm or hf:PATH)")
    if not text and not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module or a text encoder's name, got {type(model).__name__}")
    if text and budget.kind != "bytes":
        raise ConfigError(f"a text encoder's search takes a max_bytes budget ({budget.field} is not searched yet)")
    space = space if space is not None else DEFAULT_TEXT_SPACE if text else DEFAULT_SPACE
    if not isinstance(space, TextSpace if text else SearchSpace):
        raise ConfigError(f"space for {'a text encoder' if text else 'this model'} is a "
                          f"{'TextSpace' if text else 'SearchSpace'}, got {type(space).__name__}")
    schedule = schedule if schedule is not None else pts.TEXT_SCHEDULE if text else pts.SCHEDULE
    if not schedule or not all(isinstance(spec, pts.PointSpec) for spec in schedule):
        raise ConfigError("schedule must be a non-empty sequence of PointSpec")
    if calibration_samples is None:
        calibration_samples = DEFAULT_SAMPLES["text" if text else "images"]
    for name, value in (("jobs", jobs), ("calibration_samples", calibration_samples)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
    hand_found = inputs.hand_points(hand, budget.kind)
    out = Path(out).resolve()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out {out} is a file; give a folder")
    if text:
        recovery = NO_TRAINING
        model, data_table, setting_data, model_table, split = _text_inputs(model, data, out)
    else:
        data_table = inputs.data_table(data)
        setting_data, split = data_table, {}
        model_table = inputs.model_table(model, builder, out / inputs.ORIGINAL)
    fresh = not (out / inputs.STATE).exists()
    digest = inputs.write_original(model, out, model_table.get("builder"), setting_data)
    for path, content in split.items():  # a text's calibration and validation passages
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, content)
    setting = Setting(digest, tuple(sorted(model_table.items())), tuple(sorted(setting_data.items())),
                      budget.kind, calibration_samples, space if text else None, runtime=budget.runtime)
    clock = Clock(out, budget.time_limit)
    try:  # refusals come before any measurement is stored; a refused new folder is left as it was
        ctx = context(setting)
        layers = _text_layers(ctx.model) if text else candidate_layers(ctx.model, budget.kind)
        if not layers:
            raise ConfigError(_no_layers(ctx.model, budget.kind))
        original = _original(ctx, out, digest)
        if budget.kind == "latency_ms":  # one reference latency for every process (``table.latency_of``)
            setting = dataclasses.replace(setting, latency_ms=original["latency_ms"])
            ctx = context(setting)
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


def _text_inputs(spec: str, data: Any, out: Path) -> tuple[nn.Module, dict, dict, dict, dict]:
    """A text encoder's model, the recipes' ``[data]`` table, the search's data table (with the
    validation text), the ``[model]`` table and the split text files to write."""
    from netshrink.autocompress import text
    from netshrink.models.pretrained import load_pretrained

    model_table = text.model_table(spec)
    data_table, validation, split = text.data_tables(data, out)
    return load_pretrained(model_table["pretrained"]).model, data_table, \
        {**data_table, "validation": validation}, model_table, split


def _text_layers(model: nn.Module) -> list[str]:
    from netshrink.autocompress.text import layers

    return layers(model)


def _no_layers(model: nn.Module, kind: str) -> str:
    what = ("Linear or Conv layer" if kind == "bytes"
            else "layer whose output channels can be removed (the only change that moves latency or dense MACs)")
    return (f"{type(model).__name__} has no {what}: no family auto searches applies to it (a transformer's "
            "attention and embeddings are searched when it is a Hugging Face text encoder given by name)")


def _latency_ms(ctx: Context) -> float:
    """The original's batch-1 ms, one thread: a latency search's one absolute time, which its
    context measured; otherwise the plain measurement every point of the search records."""
    from netshrink.autocompress.table import latency_of

    return ctx.latency_ms if ctx.meter is not None else latency_of(ctx, ctx.model)


def _original(ctx: Context, out: Path, digest: str) -> dict[str, Any]:
    """The original's validation accuracy, dense fp32 bytes, .nsk bytes, MACs and latency, measured
    once per original file (``OUT/search/original.json``): a resumed search keeps the same limit
    even where it is a rate of a measured latency."""
    from netshrink.measure import count_macs, evaluate
    from netshrink.measure.size import fp32_baseline

    path = out / "search" / "original.json"
    stored = json.loads(path.read_text()) if path.exists() else {}
    runtime = ctx.meter.runtime if ctx.meter is not None else "torch"
    if stored.get("sha256") == digest and stored["measured"].get("runtime", "torch") == runtime:
        return stored["measured"]
    if ctx.text is not None:  # fidelity to itself; latency and MACs are not searched for text
        measured = {"score": "validation fidelity (mean cosine to the original's sentence embeddings)",
                    "val_accuracy": 1.0, "dense_fp32_bytes": fp32_baseline(ctx.model).nbytes,
                    "file_bytes": (out / inputs.ORIGINAL).stat().st_size, "macs": 0, "latency_ms": 0.0}
        write_atomically(path, json.dumps({"sha256": digest, "measured": measured}).encode())
        return measured
    measured = {"val_accuracy": evaluate(ctx.model, ctx.data.val), "dense_fp32_bytes": fp32_baseline(ctx.model).nbytes,
                "file_bytes": (out / inputs.ORIGINAL).stat().st_size,
                "macs": count_macs(ctx.model, ctx.data.input_shape), "latency_ms": _latency_ms(ctx),
                "runtime": runtime}
    write_atomically(path, json.dumps({"sha256": digest, "measured": measured}).encode())
    return measured


def _extremes(ctx: Context, layers: list[str], space: SearchSpace, kind: str) -> list[dict[str, Choice]]:
    """The allocations that cost least: every layer at the most sparsity and fewest bits of each
    grid, or the most channels removed (a text encoder's: every layer at its fewest bits)."""
    if ctx.text is not None:
        return [ctx.text.cheapest(layers)]
    if kind != "bytes":
        return [dict.fromkeys(layers, Choice(amount=max(space.amounts)))] if space.amounts else []
    grids = [("cluster", min(space.cluster_bits))] if space.cluster_bits else []
    grids += [("int", min(space.int_bits))] if space.int_bits else []
    return [dict.fromkeys(layers, Choice(sparsity=max(space.sparsities), values=v, bits=b)) for v, b in grids]


def _check_possible(ctx: Context, layers: list[str], space: SearchSpace, budget: Budget, limit: float) -> None:
    """Refuse, before the table is measured, a limit below what the cheapest allocations reach."""
    extremes = _extremes(ctx, layers, space, budget.kind)
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
