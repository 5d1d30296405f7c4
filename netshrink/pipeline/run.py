"""``run_recipe``: the stages of a recipe, one after another, each measured, resumable.

Each stage applies its verb, fine-tunes (``fit`` / ``distill``, or the dynamic families' joint
losses with threshold calibration and a profile), then ``finalize_`` and ``save``: the stage's
model is ``DIR/stages/NN-verb.nsk`` and its measurements ``NN-verb.json`` (both written
atomically, the JSON last, so a stage counts as finished only when both are whole). The next stage
starts from the saved file, so an interrupted run resumed later gives what an uninterrupted one
gives; inside a stage, ``fit``'s own checkpoints in ``DIR/stages/NN-verb/`` resume training. Each
stage is fingerprinted with the recipe up to it (model, data, it and every stage before it), so a
recipe fixed and run again into the same folder reuses the stages before the first one that
changed and redoes the rest.
Finalizing between stages is what lets the families combine: masks are baked into exact zeros
before clustering (which then keeps zeros as their own codebook entry), and the structural
conversions (which refuse parametrized models) see plain layers.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from netshrink.core.files import write_atomically
from netshrink.core.registry import DynamicTraining, apply_, technique_of
from netshrink.core.transform_log import get_log, get_section
from netshrink.pipeline.check import check_against_model
from netshrink.pipeline.recipe import BASELINE_TEACHER, Recipe, Stage


def fingerprint(recipe: Recipe) -> str:
    """SHA-256 of the recipe's canonical JSON."""
    return _digest(recipe.source)


def stage_fingerprint(recipe: Recipe, index: int, digests: dict[str, str]) -> str:
    """SHA-256 of what stage ``index`` (0: the baseline) depends on: the model (its resolved file and
    the file's contents), the data (as named, and the contents of its splits) and the stages up to
    it, each teacher file's contents included (``digests``: ``file_digests(recipe, data)``)."""
    source = recipe.source
    files = {path: digests[path] for path in _files(recipe, index)}
    return _digest({"model": recipe.model, "data": source.get("data"), "data_contents": digests.get(DATA_KEY),
                    "files": files, "stages": (source.get("stages") or [])[:index]})


DATA_KEY = "<data>"


def file_digests(recipe: Recipe, data: Any = None) -> dict[str, str]:
    """SHA-256 of every file the recipe reads (its checkpoint, its teachers), each read once, and of
    the loaded data's splits under ``DATA_KEY`` (so a data file changed in place is a new run)."""
    digests = {path: _file_digest(path) for path in _files(recipe, len(recipe.stages))}
    if data is not None:
        digests[DATA_KEY] = _data_digest(data)
    return digests


def _data_digest(data: Any) -> str:
    digest = hashlib.sha256()
    for split in (data.train, data.val, data.test):
        for tensor in (split.x, split.y):
            digest.update(str((tuple(tensor.shape), str(tensor.dtype))).encode())
            digest.update(tensor.detach().contiguous().view(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _files(recipe: Recipe, index: int) -> list[str]:
    """The checkpoint, and the teacher files of the stages up to ``index``."""
    files = [value for kind, value in recipe.model.items() if kind == "checkpoint"]
    return files + [stage.teacher for stage in recipe.stages[:index]
                    if stage.teacher is not None and stage.teacher != BASELINE_TEACHER]


def _file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def build_model(recipe: Recipe, data: Any) -> nn.Module:
    """The recipe's starting model: a checkpoint (.safetensors or .nsk), a zoo model sized for the
    data, or the user's ``package.module:function`` builder called with no arguments (its weights
    from the checkpoint when one is given with it)."""
    if "builder" in recipe.model:
        model = _user_builder(recipe.model["builder"])()
        if "checkpoint" in recipe.model:
            model = fill_from(model, recipe.model["checkpoint"])
        return model
    kind, value = next(iter(recipe.model.items()))
    if kind == "checkpoint":
        if value.endswith(".nsk"):
            from netshrink.codec.container import load

            return load(value)
        from netshrink.train import load_model

        return load_model(value)
    from netshrink.models import create_for_data

    torch.manual_seed(0)
    return create_for_data(value, data.input_shape, data.num_classes)


def fill_from(model: nn.Module, checkpoint: str) -> nn.Module:
    """``model`` (a user's class) with the weights and transform log of ``checkpoint``."""
    if checkpoint.endswith(".nsk"):
        from netshrink.codec.container import load

        return load(checkpoint, model=model)
    from netshrink.core.transform_log import set_log
    from netshrink.train.checkpoint import load_checkpoint, load_model_state

    tensors, meta = load_checkpoint(checkpoint)
    load_model_state(model, tensors, meta, checkpoint)
    set_log(model, meta["transform_log"])
    return model


def _user_builder(value: str) -> Any:
    import importlib

    module, _, function = value.partition(":")
    return getattr(importlib.import_module(module), function)


def load_stage(path: Path, recipe: Recipe) -> nn.Module:
    """A saved stage; a user's builder gives the module the log is replayed on."""
    from netshrink.codec.container import load

    if "builder" in recipe.model:
        return load(path, model=_user_builder(recipe.model["builder"])())
    return load(path)


def measure_stage(model: nn.Module, nsk: Path, data: Any, baseline_bytes: int) -> dict[str, Any]:
    """Validation accuracy, file bytes and rate against the baseline's dense fp32 file, parameters,
    nonzeros, MACs, batch-1 latency (1 thread, on validation inputs), per-layer rows of the file,
    and the dynamic profile table where the model has one."""
    from netshrink.codec.inspect import inspect_file
    from netshrink.measure import count_macs, evaluate
    from netshrink.measure.latency import measure_latency
    from netshrink.measure.macs import counted_path
    from netshrink.measure.size import count_nonzero, count_parameters

    model.eval()
    size = nsk.stat().st_size
    row = {
        "val_accuracy": evaluate(model, data.val),
        "file_bytes": size,
        "rate": baseline_bytes / size,
        "params": count_parameters(model),
        "nonzero_params": count_nonzero(model),
        "macs": count_macs(model, data.input_shape),
        "macs_counted": counted_path(model),  # None: the one path the model runs
        "latency_ms": measure_latency(model, data.input_shape, batch_size=1, threads=1, repeats=10,
                                      inputs=data.val.x if len(data.val.x) else data.train.x)["median_ms"],
        "layers": [{k: r[k] for k in ("name", "shape", "encoding", "weights", "kept_pct", "bits_per_weight",
                                      "bits_per_index", "bytes", "rate")} for r in inspect_file(nsk)],
    }
    profile = _profile_points(model)
    if profile:
        row["dynamic_points"] = profile
    return row


def _profile_points(model: nn.Module) -> list[dict[str, Any]]:
    from netshrink.dynamic.profile import PROFILE_SECTION, profile_table

    table = get_section(model, PROFILE_SECTION) and profile_table(model)
    return list(table["points"]) if table else []


def _teacher(stage: Stage, recipe: Recipe, baseline: Path) -> nn.Module | None:
    if stage.teacher is None:
        return None
    if stage.teacher == BASELINE_TEACHER:
        return load_stage(baseline, recipe)
    if stage.teacher.endswith(".nsk"):
        from netshrink.codec.container import load

        return load(stage.teacher)
    from netshrink.train import load_model

    return load_model(stage.teacher)


def dynamic_training(model: nn.Module) -> DynamicTraining | None:
    """How the model trains from now on, when a technique in its log made it dynamic (the last
    such), else None."""
    training = None
    for record in get_log(model):
        technique = technique_of(record.get("verb", ""))
        if technique is not None and technique.training is not None:
            training = technique.training
    return training


def run_stage(model: nn.Module, stage: Stage, recipe: Recipe, data: Any, work: Path, baseline: Path,
              progress: bool) -> nn.Module:
    """Apply one stage's technique, its repair and its fine-tuning to ``model`` in place; returns
    the model.

    A model made dynamic by this or an earlier stage keeps training with its technique's joint loss
    (exits: BranchyNet's, widths: the sandwich rule), so a later prune or cluster stage fine-tunes
    every exit and width, and is re-calibrated (thresholds, operating points) after every stage, so
    the profile in the file describes the model as saved."""
    from netshrink.train import fit

    technique = stage.technique
    if technique is not None:
        apply_(model, stage.config)
        if technique.repair is not None:
            technique.repair(model, data)
    dynamic = dynamic_training(model)
    if stage.epochs:
        options = {"out_dir": work, "resume": True, "progress": progress}
        if dynamic is not None:
            if dynamic.prepare is not None:
                dynamic.prepare(model)
            fit(model, data, stage.fit, loss_fn=dynamic.loss(model), **options)
        elif stage.teacher is not None:
            from netshrink.distillation.teach import distill

            distill(model, _teacher(stage, recipe, baseline), data, stage.distill, stage.fit, **options)
        else:
            fit(model, data, stage.fit, **options)
    if dynamic is not None:
        dynamic.calibrate(model.eval(), data.val, **_dynamic_options(recipe, stage, dynamic))
    return model


def _dynamic_options(recipe: Recipe, stage: Stage, dynamic: DynamicTraining) -> dict[str, Any]:
    """The calibration options (``max_drop``...) of the stage, up to and including ``stage``, that last
    applied the technique training the model dynamically: a later prune or cluster stage
    re-calibrates with the early-exit stage's ``max_drop``, not the default."""
    options: dict[str, Any] = {}
    for earlier in recipe.stages:
        if earlier.technique is not None and earlier.technique.training is dynamic:
            options = earlier.options
        if earlier is stage:
            break
    return options


def stage_files(out: Path, index: int, verb: str) -> tuple[Path, Path, Path]:
    """(model file, measurements, fit's working folder) of stage ``index`` (0 is the baseline)."""
    stem = out / "stages" / f"{index:02d}-{verb}"
    return stem.with_suffix(".nsk"), stem.with_suffix(".json"), stem


def run_recipe(recipe: Recipe, out: str | Path, progress: bool = True, log=print, test: bool = True) -> dict[str, Any]:
    """Run every stage of ``recipe`` into ``out`` (resuming after the last finished stage) and write
    ``model.nsk``, ``report.json`` and ``report.html``. Returns the report. ``test=False`` leaves the
    test split unread (the final test accuracies are None), as a search choosing among runs must.
    A pretrained model's recipe runs through ``run_pretrained.run_pretrained_recipe`` (no labels)."""
    if "pretrained" in recipe.model:
        from netshrink.pipeline.run_pretrained import run_pretrained_recipe

        return run_pretrained_recipe(recipe, out, log=log)
    from netshrink.codec.container import save
    from netshrink.core import finalize_
    from netshrink.data import load_dataset
    from netshrink.measure import evaluate
    from netshrink.measure.size import fp32_baseline

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    digest = fingerprint(recipe)
    write_atomically(out / "recipe.json", json.dumps({"fingerprint": digest, "recipe": recipe.source}, indent=1,
                                                     default=str).encode())
    data = load_dataset(recipe.data["name"], data_dir=recipe.data.get("dir"),
                        val_fraction=recipe.data.get("val_fraction", 0.1))
    total = len(recipe.stages)
    rows: list[dict[str, Any]] = []
    base_nsk, base_json, _ = stage_files(out, 0, "baseline")
    digests = file_digests(recipe, data)
    base_row = _finished(base_json, stage_fingerprint(recipe, 0, digests))
    if base_row is not None:
        rows.append(base_row)
        model = load_stage(base_nsk, recipe)
        log(f"[0/{total}] baseline: done before (reused)")
    else:
        log(f"[0/{total}] baseline: the starting model as dense fp32 (what every rate is against)")
        base_json.unlink(missing_ok=True)  # an old stage's measurements never vouch for the new file
        model = build_model(recipe, data)
        finalize_(model)
        save(model, base_nsk)
        model = load_stage(base_nsk, recipe)
        reference = fp32_baseline(model).nbytes
        row = {"stage": 0, "verb": "baseline", "fingerprint": stage_fingerprint(recipe, 0, digests),
               "dense_fp32_bytes": reference, "seconds": 0.0, **measure_stage(model, base_nsk, data, reference)}
        # the baseline row is the reference itself (dense fp32, 1.0x); its lossless .nsk is kept aside
        row.update(nsk_bytes=row["file_bytes"], file_bytes=reference, rate=1.0)
        write_atomically(base_json, json.dumps(row, indent=1).encode())
        rows.append(row)
    check_against_model(recipe, model)
    baseline_bytes = rows[0]["dense_fp32_bytes"]
    _line(log, rows[0], total)
    reusing = base_row is not None
    for index, stage in enumerate(recipe.stages, start=1):
        nsk, measured, work = stage_files(out, index, stage.verb)
        stamp = stage_fingerprint(recipe, index, digests)
        done = _finished(measured, stamp) if reusing else None
        if done is not None:
            rows.append(done)
            model = None
            log(f"[{index}/{total}] {stage.verb}: done before (reused)")
            _line(log, rows[-1], total)
            continue
        reusing = False
        if model is None:
            previous = stage_files(out, index - 1, recipe.stages[index - 2].verb if index > 1 else "baseline")[0]
            model = load_stage(previous, recipe)
        measured.unlink(missing_ok=True)  # an old stage's measurements never vouch for the new file
        _claim(work, stamp)
        what = stage.config or stage.distill or "training only"
        log(f"[{index}/{total}] {stage.verb}: {what}, {stage.epochs} epoch(s)"
            + (f", teacher {stage.teacher}" if stage.teacher else ""))
        started = time.perf_counter()
        model.train()
        run_stage(model, stage, recipe, data, work, base_nsk, progress)
        finalize_(model)
        save(model, nsk)
        model = load_stage(nsk, recipe)
        row = {"stage": index, "verb": stage.verb, "fingerprint": stamp, "seconds": time.perf_counter() - started,
               **measure_stage(model, nsk, data, baseline_bytes)}
        write_atomically(measured, json.dumps(row, indent=1).encode())
        rows.append(row)
        _line(log, row, total)
    if model is None:
        model = load_stage(nsk, recipe)
    final_nsk = out / "model.nsk"
    write_atomically(final_nsk, (stage_files(out, total, recipe.stages[-1].verb)[0]).read_bytes())
    baseline_model = load_stage(base_nsk, recipe)
    report = {
        "recipe": recipe.name, "fingerprint": digest, "data": data.name, "stages": rows,
        "final": {"file": str(final_nsk), "file_bytes": final_nsk.stat().st_size,
                  "rate": baseline_bytes / final_nsk.stat().st_size,
                  "test_accuracy": evaluate(model.eval(), data.test) if test else None,
                  "baseline_test_accuracy": evaluate(baseline_model.eval(), data.test) if test else None,
                  "baseline_dense_fp32_bytes": baseline_bytes},
        "torch": torch.__version__, "device": "cpu",
    }
    write_atomically(out / "report.json", json.dumps(report, indent=1).encode())
    from netshrink.report import write_html_report

    write_html_report(report, out / "report.html")
    tested = (f"test accuracy {report['final']['test_accuracy']:.4f} (baseline "
              f"{report['final']['baseline_test_accuracy']:.4f}); ") if test else "test split not read; "
    log(f"{tested}{final_nsk}: {report['final']['file_bytes']:,} bytes, {report['final']['rate']:.1f}x; "
        f"report {out / 'report.html'}")
    return report


def _finished(measured: Path, stamp: str) -> dict[str, Any] | None:
    """The measurements of a stage finished before with the same fingerprint, else None."""
    if not measured.exists():
        return None
    row = json.loads(measured.read_text())
    return row if row.get("fingerprint") == stamp else None


def _claim(work: Path, stamp: str) -> None:
    """Make ``work`` (fit's checkpoints) belong to this stage's fingerprint: checkpoints of an
    interrupted run of the same stage are kept for resuming, those of a changed stage are removed."""
    owner = work / "stage-fingerprint"
    if work.exists() and (not owner.exists() or owner.read_text() != stamp):
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    owner.write_text(stamp)


def _line(log, row: dict[str, Any], total: int) -> None:
    log(f"      val acc {row['val_accuracy']:.4f}, {row['file_bytes']:,} bytes ({row['rate']:.1f}x), "
        f"{row['macs']:,} MACs, {row['latency_ms']:.3f} ms")
