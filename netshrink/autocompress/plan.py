"""An allocation (one ``Choice`` per layer) as recipe stages, applied untrained or written as TOML.

The stages are those of a hand-written recipe, in the order ``docs/design.md`` gives: structural
changes first (one ``structured_prune`` stage per amount), then ``magnitude_prune`` with its
per-layer ``sparsity`` plan and fine-tuning under the masks, ``quantize`` of the uniform-grid
layers (post-training), and last ``cluster`` of every valued layer with centroid fine-tuning. A
quantized layer holds at most ``2**bits`` values, so clustering it at the same bits shares them
exactly (no k-means, zeros kept): its last fine-tuning moves its levels without untying them.
Recovery fine-tunes each trained stage by distillation from the original (Hinton et al. 2015)
or on labels.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from torch import nn

from netshrink.autocompress.choices import Choice
from netshrink.core.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Recovery:
    """How each point recovers after compression, through ``fit`` (or ``distill``).

    Args:
        epochs: fine-tuning epochs after pruning (magnitude or structured), SGD.
        cluster_epochs: centroid fine-tuning epochs after clustering, Adam.
        distill: learn from the original's soft outputs (T=4, alpha=0.9, cached) instead of labels.
        lr: SGD learning rate of the pruning stages (Adam's is a tenth of it).
        batch_size: training batch size.
        seed: ``FitConfig.seed`` of every fine-tuning (batch order; a benchmark's seeds).
    """

    epochs: int = 4
    cluster_epochs: int = 2
    distill: bool = True
    lr: float = 0.01
    batch_size: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "cluster_epochs", "batch_size", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name == "batch_size" else 0):
                raise ConfigError(f"Recovery.{name} must be an integer >= {1 if name == 'batch_size' else 0}, "
                                  f"got {value!r}")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not self.lr > 0:
            raise ConfigError(f"Recovery.lr must be positive, got {self.lr!r}")

    def scaled(self, factor: int) -> Recovery:
        """The same recovery with ``factor`` times the epochs (0: none, a one-shot point)."""
        return dataclasses.replace(self, epochs=self.epochs * factor, cluster_epochs=self.cluster_epochs * factor)


#: no recovery at all: the stages applied untrained (the table's trials, a one-shot point)
NO_TRAINING = Recovery(epochs=0, cluster_epochs=0)


def _training(epochs: int, recovery: Recovery, fit: dict[str, Any]) -> dict[str, Any]:
    if epochs == 0:
        return {"epochs": 0}
    stage: dict[str, Any] = {"epochs": epochs, "fit": {**fit, "batch_size": recovery.batch_size,
                                                       **({"seed": recovery.seed} if recovery.seed else {})}}
    if recovery.distill:
        stage.update(teacher="baseline", distill={"T": 4.0, "alpha": 0.9, "cache_teacher": True})
    return stage


def stages_for(allocation: dict[str, Choice], recovery: Recovery) -> list[dict[str, Any]]:
    """The recipe stages applying ``allocation`` (layers at ``KEEP`` are left out); at least one."""
    sgd = {"lr": float(recovery.lr), "weight_decay": 0.0001}
    adam = {"optimizer": "adam", "lr": float(recovery.lr) / 10, "weight_decay": 0.0}
    stages: list[dict[str, Any]] = []
    for amount in sorted({c.amount for c in allocation.values() if c.amount}):
        layers = [name for name, c in allocation.items() if c.amount == amount]
        stages.append({"verb": "structured_prune", "config": {"amount": amount, "layers": layers}, "epochs": 0})
    sparsity = {name: c.sparsity for name, c in allocation.items() if c.sparsity}
    uniform = {name: c.bits for name, c in allocation.items() if c.values == "int"}
    shared = {name: c.bits for name, c in allocation.items() if c.values is not None}
    if sparsity:
        stages.append({"verb": "magnitude_prune", "config": {"sparsity": sparsity}, "epochs": 0})
    if stages:  # fine-tune after the structural changes and the pruning, under the masks
        stages[-1].update(_training(recovery.epochs, recovery, sgd))
    if uniform:
        stages.append({"verb": "quantize", "config": {"bits": uniform}, "epochs": 0})
    if shared:
        stages.append({"verb": "cluster", "config": {"bits": shared, "init": "linear"},
                       **_training(recovery.cluster_epochs, recovery, adam)})
    if not stages:  # every layer kept: the original itself (a recipe has at least one stage)
        stages.append({"verb": "magnitude_prune", "config": {"sparsity": 0.0}, "epochs": 0})
    return stages


def recipe_for(name: str, model_table: dict[str, str], data_table: dict[str, Any],
               stages: list[dict[str, Any]]) -> dict[str, Any]:
    """A whole recipe (the dict ``parse_recipe`` reads and ``netshrink run`` runs)."""
    return {"name": name, "model": dict(model_table), "data": dict(data_table), "stages": stages}


def apply_untrained(model: nn.Module, stages: list[dict[str, Any]], data: Any,
                    calibration: dict[str, Any] | None = None) -> nn.Module:
    """Apply ``stages`` to ``model`` in place as ``run_recipe`` does, without any training: each
    stage's config parsed as the recipe parses it, its technique, its repair, then ``finalize_``.
    With ``calibration`` (a pretrained model's tokenized text) each config reading calibration data
    gets it and no repair runs, as ``run_pretrained`` does."""
    from netshrink.core import finalize_
    from netshrink.core.registry import apply_, technique_of
    from netshrink.pipeline.recipe import build_config

    for index, stage in enumerate(stages):
        technique = technique_of(stage["verb"])
        if technique is None:  # a training-only stage changes nothing untrained
            continue
        problems: list[str] = []
        config = build_config(technique.config_type, stage.get("config"), f"stages[{index}].config", problems)
        if problems:
            raise ConfigError("; ".join(problems))
        if calibration is not None:
            from netshrink.pipeline.run_pretrained import with_calibration

            config = with_calibration(config, calibration)
        apply_(model, config)
        if technique.repair is not None and calibration is None:
            technique.repair(model, data)
        finalize_(model)
    return model


def to_toml(recipe: dict[str, Any], comment: str = "") -> str:
    """``recipe`` as TOML text (``tomllib`` reads it back equal). Hand-written: the standard library
    reads TOML but does not write it, and a recipe is a fixed shape of tables, strings, numbers,
    booleans and lists."""
    lines = [f"# {line}" for line in comment.splitlines()]
    for key in ("name",):
        lines.append(f"{key} = {_value(recipe[key])}")
    for table in ("model", "data"):
        lines += ["", f"[{table}]"] + [f"{_key(k)} = {_value(v)}" for k, v in recipe[table].items()]
    for stage in recipe["stages"]:
        lines += ["", "[[stages]]"] + [f"{_key(k)} = {_value(v)}" for k, v in stage.items()]
    return "\n".join(lines) + "\n"


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"no TOML for {value!r} in a recipe")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML for {type(value).__name__} in a recipe")


def write_recipe(path: Path, recipe: dict[str, Any], comment: str = "") -> None:
    """Write ``recipe`` as TOML, atomically."""
    from netshrink.core.files import write_atomically

    write_atomically(path, to_toml(recipe, comment).encode())
