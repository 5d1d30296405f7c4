"""``run_recipe`` for a pretrained transformer (``[model] pretrained = ...``): each stage is a
technique calibrated on the recipe's text (tokenized by the model's own tokenizer), without
training, then ``finalize_`` and ``save``; resumable stage by stage as ``run_recipe`` is (a stage
finished with the same fingerprint is reused). There are no labels, so a stage is measured by its
file (bytes, rate against the dense fp32 original, parameters, nonzeros, per-layer encodings);
fidelity to the original (embedding cosine, perplexity) is ``benchmarks/transformers.py``'s.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from torch import nn

from netshrink.core.files import write_atomically
from netshrink.core.registry import apply_
from netshrink.pipeline.check import check_against_model
from netshrink.pipeline.recipe import Recipe

BASELINE = "baseline"


def load_pretrained_model(recipe: Recipe) -> tuple[nn.Module, Any]:
    """The recipe's pretrained model (eval mode) and its tokenizer."""
    from netshrink.models.pretrained import load_pretrained

    loaded = load_pretrained(recipe.model["pretrained"])
    return loaded.model, loaded.tokenizer


def calibration_text(recipe: Recipe, tokenizer: Any) -> dict[str, Any]:
    """The recipe's ``data.text`` as the model's inputs."""
    from netshrink.data import read_text

    return read_text(recipe.data["text"], tokenizer, max_length=recipe.data.get("max_length", 128))


def with_calibration(config: Any, inputs: dict[str, Any]) -> Any:
    """``config`` with ``inputs`` as its ``calibration_data`` when it reads any."""
    if "calibration_data" in {f.name for f in dataclasses.fields(config)}:
        return dataclasses.replace(config, calibration_data=inputs)
    return config


def _measure(model: nn.Module, nsk: Path, baseline_bytes: int) -> dict[str, Any]:
    from netshrink.codec.inspect import inspect_file
    from netshrink.measure.size import count_nonzero, count_parameters

    size = nsk.stat().st_size
    return {"file_bytes": size, "rate": baseline_bytes / size, "params": count_parameters(model),
            "nonzero_params": count_nonzero(model),
            "layers": [{k: r[k] for k in ("name", "shape", "encoding", "weights", "kept_pct", "bits_per_weight",
                                          "bytes", "rate")} for r in inspect_file(nsk)]}


def run_pretrained_recipe(recipe: Recipe, out: str | Path, log=print) -> dict[str, Any]:
    """Run the stages of a pretrained model's recipe into ``out``: ``stages/NN-verb.nsk`` and
    ``.json`` per stage, then ``model.nsk`` and ``report.json``. Returns the report."""
    from netshrink.codec.container import load, save
    from netshrink.core import finalize_
    from netshrink.data.text import check_vocabulary
    from netshrink.measure.size import fp32_baseline
    from netshrink.pipeline.run import _finished, fingerprint, stage_files, stage_fingerprint

    model, tokenizer = load_pretrained_model(recipe)
    fresh = model  # an untouched instance to load saved stages into
    check_against_model(recipe, model)
    inputs = calibration_text(recipe, tokenizer)
    check_vocabulary(inputs, model, "data.text")  # every check before anything is written
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_atomically(out / "recipe.json", json.dumps({"fingerprint": fingerprint(recipe), "recipe": recipe.source},
                                                     indent=1, default=str).encode())
    total = len(recipe.stages)
    base_nsk, base_json, _ = stage_files(out, 0, BASELINE)
    reference = fp32_baseline(model).nbytes
    row = _finished(base_json, stage_fingerprint(recipe, 0, {}))
    if row is None:
        base_json.unlink(missing_ok=True)
        save(model, base_nsk)
        row = {"stage": 0, "verb": BASELINE, "fingerprint": stage_fingerprint(recipe, 0, {}),
               "dense_fp32_bytes": reference, **_measure(model, base_nsk, reference)}
        row.update(nsk_bytes=row["file_bytes"], file_bytes=reference, rate=1.0)
        write_atomically(base_json, json.dumps(row, indent=1).encode())
    rows, current, reusing = [row], None, True
    for index, stage in enumerate(recipe.stages, start=1):
        nsk, measured, _ = stage_files(out, index, stage.verb)
        stamp = stage_fingerprint(recipe, index, {})
        done = _finished(measured, stamp) if reusing else None
        if done is not None:
            rows.append(done)
            log(f"[{index}/{total}] {stage.verb}: done before (reused)")
            continue
        previous = stage_files(out, index - 1, recipe.stages[index - 2].verb if index > 1 else BASELINE)[0]
        current = current if not reusing else load(previous, model=copy.deepcopy(fresh))
        reusing = False
        measured.unlink(missing_ok=True)
        log(f"[{index}/{total}] {stage.verb}: {stage.config}")
        started = time.perf_counter()
        apply_(current, with_calibration(stage.config, inputs))
        finalize_(current)
        save(current, nsk)
        row = {"stage": index, "verb": stage.verb, "fingerprint": stamp, "seconds": time.perf_counter() - started,
               **_measure(current, nsk, reference)}
        write_atomically(measured, json.dumps(row, indent=1).encode())
        rows.append(row)
        log(f"      {row['file_bytes']:,} bytes ({row['rate']:.1f}x), {row['nonzero_params']:,} nonzero")
    final_nsk = out / "model.nsk"
    write_atomically(final_nsk, stage_files(out, total, recipe.stages[-1].verb)[0].read_bytes())
    report = {"recipe": recipe.name, "fingerprint": fingerprint(recipe), "model": recipe.model["pretrained"],
              "text": recipe.data["text"], "stages": rows,
              "final": {"file": str(final_nsk), "file_bytes": final_nsk.stat().st_size,
                        "rate": reference / final_nsk.stat().st_size, "baseline_dense_fp32_bytes": reference}}
    write_atomically(out / "report.json", json.dumps(report, indent=1).encode())
    log(f"{final_nsk}: {report['final']['file_bytes']:,} bytes, {report['final']['rate']:.1f}x")
    return report
