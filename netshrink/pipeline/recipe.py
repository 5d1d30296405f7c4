"""TOML recipes: a model, its data and an ordered list of compression stages, validated whole.

A recipe (read with the standard library's ``tomllib``)::

    name = "deep-compression-lenet300_100"
    [model]
    checkpoint = "benchmarks/checkpoints/lenet300_100.safetensors"  # or zoo = "lenet5" / builder = "pkg.mod:fn"
                                            # (a builder with a checkpoint: the user's class, its weights)
    [data]
    name = "fashion-mnist"                  # digits, a .npz or an image folder; dir = IDX folder
    [[stages]]
    verb = "magnitude_prune"                # a technique's name (`netshrink techniques`), "train" or "distill"
    config = { sparsity = 0.92, scope = "layer" }
    epochs = 3                              # fine-tuning budget after the verb (0: none)
    fit = { lr = 0.01 }                     # any other FitConfig field
    teacher = "baseline"                    # optional: distil from the recipe's model or a file
    distill = { T = 4.0, alpha = 0.9 }      # the Distill config used with the teacher

A pretrained transformer (``netshrink.models.pretrained``) is compressed without labels: its
stages are techniques only (no training), each calibrated on text tokenized by its own tokenizer
(``netshrink.data.read_text``; given to every stage's config that reads ``calibration_data``)::

    [model]
    pretrained = "hf:models/bert"           # or "minilm" / "smollm2"
    [data]
    text = "calibration.txt"                # a .txt file (one passage a line) or a folder of them
    max_length = 128                        # tokens per passage (optional)
    [[stages]]
    verb = "gptq"
    config = { bits = 4, group_size = 128 }

Every problem is found before anything runs and reported together, one line each with its place
(``stages[2].config.bits: ...``), by constructing each config (its own checks are the checks).
What a verb is (its config, whether it changes structure, how a dynamic model trains, which extra
stage keys it reads) comes from its technique's registration (``netshrink.core.registry``); the
recipe knows only its two training-only stages, ``train`` and ``distill``.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import tomllib
from pathlib import Path
from typing import Any

from netshrink.core.errors import ConfigError
from netshrink.core.registry import Technique, technique_of, techniques

BUILT_IN_DATA = ("fashion-mnist", "digits")
BASELINE_TEACHER = "baseline"
TOP_KEYS = {"name", "model", "data", "stages"}
MODEL_KEYS = {"zoo", "checkpoint", "builder", "pretrained"}
DATA_KEYS = {"name", "dir", "val_fraction"}
TEXT_DATA_KEYS = {"text", "max_length"}
PACKAGED_MODELS = ("minilm", "smollm2")  # ``models.pretrained.PACKAGED`` (importing it imports torch)
#: stages that change nothing and only train: on labels, or from a teacher (``config``: Distill)
TRAIN, DISTILL = "train", "distill"
STAGE_KEYS = {"verb", "config", "epochs", "fit", "teacher", "distill"}


class RecipeError(ConfigError):
    """A recipe with problems: the message has one line per problem, each with its place."""


@dataclasses.dataclass(frozen=True)
class Stage:
    """One validated stage: its technique (None for a training-only stage) and config, its
    fine-tuning, optional teacher, and the options its technique's dynamic training reads."""

    verb: str
    config: Any
    fit: Any
    epochs: int = 0
    teacher: str | None = None
    distill: Any = None
    technique: Technique | None = None
    options: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A validated recipe; ``source`` is the parsed TOML (kept for the report and resume check)."""

    name: str
    model: dict[str, str]
    data: dict[str, Any]
    stages: tuple[Stage, ...]
    source: dict[str, Any]
    base: Path


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate ``path``; relative paths inside are taken from the current folder, then
    from the recipe's folder. Raises ``RecipeError`` listing every problem."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe {path} does not exist; give a .toml file (see recipes/)")
    try:
        source = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{path}: not valid TOML: {exc}") from None
    return parse_recipe(source, base=path.parent, where=str(path))


def parse_recipe(source: dict[str, Any], base: Path = Path("."), where: str = "recipe") -> Recipe:
    """Validate a parsed recipe; every problem is collected before ``RecipeError`` is raised."""
    problems: list[str] = []
    _unknown(source, TOP_KEYS, "", problems)
    name = source.get("name", "recipe")
    if not isinstance(name, str):
        problems.append(f"name: must be a string, got {name!r}")
    model = _model(source.get("model"), base, problems)
    pretrained = "pretrained" in model
    data = _text_data(source.get("data"), base, problems) if pretrained else _data(source.get("data"), base, problems)
    stages_src = source.get("stages")
    stages: list[Stage] = []
    if not isinstance(stages_src, list) or not stages_src:
        problems.append("stages: give at least one [[stages]] table")
    else:
        for i, stage in enumerate(stages_src):
            parsed = _stage(stage, f"stages[{i}]", base, problems)
            if parsed is not None and pretrained:
                _check_untrained(parsed, f"stages[{i}]", problems)
            if parsed is not None:
                stages.append(parsed)
        _check_order(stages_src, problems)
    if problems:
        raise RecipeError(f"{where} has {len(problems)} problem(s):\n  " + "\n  ".join(problems))
    return Recipe(name=name, model=model, data=data, stages=tuple(stages), source=source, base=base)


def resolve_path(value: str, base: Path) -> Path | None:
    """``value`` as given if it exists, else beside the recipe; None when neither exists."""
    for candidate in (Path(value), base / value):
        if candidate.exists():
            return candidate
    return None


def _unknown(table: dict[str, Any], allowed: set[str], place: str, problems: list[str]) -> set[str]:
    """Report each unknown key once, naming the allowed key it is closest to; returns the allowed
    keys that a misspelling stood for (absent, but meant: their own "missing" problems would only
    repeat this one)."""
    meant = set()
    for key in sorted(set(table) - allowed):
        close = difflib.get_close_matches(key, sorted(allowed - set(table)), n=1)
        if close:
            meant.add(close[0])
            problems.append(f"{place}{key}: unknown key; did you mean {close[0]}?")
        else:
            problems.append(f"{place}{key}: unknown key; allowed: {', '.join(sorted(allowed))}")
    return meant


def _model(table: Any, base: Path, problems: list[str]) -> dict[str, str]:
    if not isinstance(table, dict):
        problems.append("model: give a [model] table with one of zoo, checkpoint, builder, pretrained")
        return {}
    _unknown(table, MODEL_KEYS, "model.", problems)
    given = [k for k in ("zoo", "checkpoint", "builder", "pretrained") if k in table]
    if given == ["checkpoint", "builder"]:  # a user's class: the builder builds it, the checkpoint fills it
        built = _model({"builder": table["builder"]}, base, problems)
        return {**_model({"checkpoint": table["checkpoint"]}, base, problems), **built} if built else {}
    if len(given) != 1:
        problems.append(f"model: give exactly one of zoo, checkpoint, builder, pretrained, or builder with "
                        f"checkpoint (got {given or 'none'})")
        return {}
    kind, value = given[0], table[given[0]]
    if not isinstance(value, str):
        problems.append(f"model.{kind}: must be a string, got {value!r}")
        return {}
    if kind == "zoo":
        from netshrink.models import list_models

        if value not in list_models():
            problems.append(f"model.zoo: unknown model {value!r}; run `netshrink models` for the names")
    elif kind == "pretrained":
        value = _pretrained(value, base, problems)
    elif kind == "checkpoint":
        found = resolve_path(value, base)
        if found is None:
            problems.append(f"model.checkpoint: {value} does not exist; give a .safetensors or .nsk file")
        else:
            value = str(found)
    elif import_builder(value, "model.builder", problems) is None:
        return {}
    return {kind: value}


def _pretrained(value: str, base: Path, problems: list[str]) -> str:
    """``minilm`` / ``smollm2``, or ``hf:PATH`` with its folder resolved as every recipe path is."""
    if value in PACKAGED_MODELS:
        return value
    if value.startswith("hf:"):
        found = resolve_path(value[3:], base)
        if found is not None and (found / "config.json").is_file():
            return f"hf:{found}"
        problems.append(f"model.pretrained: {value[3:]} is not a Hugging Face model folder (no config.json there)")
        return value
    problems.append(f"model.pretrained: unknown model {value!r}; give {', '.join(PACKAGED_MODELS)} or hf:PATH")
    return value


def _text_data(table: Any, base: Path, problems: list[str]) -> dict[str, Any]:
    """A pretrained model's ``[data]``: calibration ``text`` (a file or folder) and ``max_length``."""
    if not isinstance(table, dict):
        problems.append('data: give a [data] table with the calibration text, e.g. text = "calibration.txt"')
        return {}
    _unknown(table, TEXT_DATA_KEYS, "data.", problems)
    text = table.get("text")
    data = dict(table)
    if not isinstance(text, str):
        problems.append(f"data.text: a pretrained model calibrates on text; give a .txt file or a folder, got {text!r}")
    elif (found := resolve_path(text, base)) is None:
        problems.append(f"data.text: {text} does not exist; give a .txt file (one passage a line) or a folder")
    else:
        data["text"] = str(found)
    length = table.get("max_length", 128)
    if not isinstance(length, int) or isinstance(length, bool) or length < 1:
        problems.append(f"data.max_length: must be a positive number of tokens, got {length!r}")
    return data


def _check_untrained(stage: Stage, place: str, problems: list[str]) -> None:
    """A pretrained model's stage is a technique without training: there are no labels to train on."""
    if stage.technique is None:
        problems.append(f"{place}.verb: {stage.verb} trains on labels; a pretrained model's stages are "
                        "techniques (netshrink.recover fine-tunes without labels, in Python)")
    elif stage.epochs or stage.teacher is not None:
        problems.append(f"{place}.epochs: a pretrained model's stages do not train (no labels); remove epochs "
                        "and teacher")


def import_builder(value: str, place: str, problems: list[str]) -> Any:
    """The function ``package.module:function`` names, or None with a problem added."""
    module, _, function = value.partition(":")
    if not module or not function:
        problems.append(f"{place}: write the builder as package.module:function, got {value!r}")
        return None
    try:
        return getattr(importlib.import_module(module), function)
    except (ImportError, AttributeError) as exc:
        problems.append(f"{place}: cannot import {value!r} ({exc}); check the module is on PYTHONPATH")
        return None


def _data(table: Any, base: Path, problems: list[str]) -> dict[str, Any]:
    if not isinstance(table, dict):
        problems.append('data: give a [data] table, e.g. name = "fashion-mnist"')
        return {}
    _unknown(table, DATA_KEYS, "data.", problems)
    name = table.get("name")
    if not isinstance(name, str):
        problems.append(f"data.name: must be a string ({', '.join(BUILT_IN_DATA)} or a path), got {name!r}")
        return {}
    data = dict(table)
    if name not in BUILT_IN_DATA:
        found = resolve_path(name, base)
        if found is None:
            problems.append(f"data.name: {name} is neither {' nor '.join(BUILT_IN_DATA)} nor an existing .npz or "
                            "image folder")
        else:
            data["name"] = str(found)
    fraction = table.get("val_fraction", 0.1)
    if not isinstance(fraction, float) or not 0.0 < fraction < 1.0:
        problems.append(f"data.val_fraction: must be a number in (0, 1), got {fraction!r}")
    if "dir" in table and not isinstance(table["dir"], str):
        problems.append(f"data.dir: must be a string, got {table['dir']!r}")
    return data


def build_config(cls: type, table: Any, place: str, problems: list[str], **extra: Any) -> Any:
    """``cls(**table, **extra)`` with TOML arrays as tuples; its own checks report the problems."""
    if table is None:
        table = {}
    if not isinstance(table, dict):
        problems.append(f"{place}: must be a table, got {table!r}")
        return None
    fields = {f.name for f in dataclasses.fields(cls) if f.name != "filter_fn"}
    bad = sorted(set(table) - fields)
    for key in bad:
        problems.append(f"{place}.{key}: unknown {cls.__name__} option; allowed: {', '.join(sorted(fields))}")
    if bad:
        return None
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in table.items()}
    try:
        return cls(**values, **extra)
    except (ConfigError, TypeError, ValueError) as exc:
        problems.append(f"{place}: {exc}")
        return None


def stage_verbs() -> list[str]:
    """Every name a stage's ``verb`` may take: the training-only stages, then each technique with a
    public verb (``finalize_`` runs after every stage anyway)."""
    return [TRAIN, DISTILL] + [t.name for t in techniques() if t.verb is not None]


def _all_stage_options() -> set[str]:
    """The extra stage keys any technique's dynamic training reads (``max_drop``...)."""
    return {key for t in techniques() if t.training is not None for key in t.training.options}


def _stages_reading(key: str) -> list[str]:
    return [t.name for t in techniques() if t.training is not None and key in t.training.options]


def _stage_technique(verb_name: Any, place: str, problems: list[str]) -> tuple[str | None, Technique | None]:
    """``(name, technique)`` of a stage's verb: a training-only stage has no technique; an alias
    resolves to its technique's name; an unknown name is a problem."""
    if verb_name in (TRAIN, DISTILL):
        return verb_name, None
    technique = technique_of(verb_name) if isinstance(verb_name, str) else None
    if technique is None or technique.verb is None:
        names = stage_verbs() + [a for t in techniques() if t.verb is not None for a in t.aliases]
        close = difflib.get_close_matches(verb_name, names, n=1) if isinstance(verb_name, str) else []
        hint = f"did you mean {close[0]}?" if close else f"choose one of {', '.join(stage_verbs())}"
        problems.append(f"{place}.verb: unknown verb {verb_name!r}; {hint}")
        return None, None
    return technique.name, technique


def _stage(table: Any, place: str, base: Path, problems: list[str]) -> Stage | None:
    from netshrink.train import FitConfig

    if not isinstance(table, dict):
        problems.append(f"{place}: must be a table")
        return None
    count = len(problems)
    meant = _unknown(table, STAGE_KEYS | _all_stage_options(), f"{place}.", problems)
    if "verb" in meant:
        return None
    verb, technique = _stage_technique(table.get("verb"), place, problems)
    training = technique.training if technique is not None else None
    option_defaults = training.options if training is not None else {}
    for key in sorted(set(table) & (_all_stage_options() - set(option_defaults))):
        problems.append(f"{place}.{key}: {verb} stages do not read it; only "
                        f"{', '.join(_stages_reading(key))} stages do")
    epochs = table.get("epochs", 0)
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 0:
        problems.append(f"{place}.epochs: must be an integer >= 0, got {epochs!r}")
        epochs = 0
    fit_table = table.get("fit", {})
    if isinstance(fit_table, dict) and "epochs" in fit_table:
        problems.append(f"{place}.fit.epochs: give the budget as {place}.epochs")
        fit_table = {k: v for k, v in fit_table.items() if k != "epochs"}
    # FitConfig needs epochs >= 1; a stage with no fine-tuning keeps its own ``epochs`` of 0
    fit = build_config(FitConfig, fit_table, f"{place}.fit", problems, epochs=max(epochs, 1))
    teacher = _teacher(table.get("teacher"), place, base, problems)
    options = _options(table, option_defaults, place, problems)
    distill_cfg = None
    config = None
    if verb is not None:
        distill_cfg = _stage_options(technique, verb, table, epochs, place, problems, meant)
        if technique is not None:
            config = build_config(technique.config_type, table.get("config"), f"{place}.config", problems)
    if len(problems) > count:
        return None
    return Stage(verb=verb, config=config, fit=fit, epochs=epochs, teacher=teacher, distill=distill_cfg,
                 technique=technique, options=options)


def _teacher(teacher: Any, place: str, base: Path, problems: list[str]) -> str | None:
    if teacher is None:
        return None
    if not isinstance(teacher, str):
        problems.append(f"{place}.teacher: must be a string (\"{BASELINE_TEACHER}\" or a file), got {teacher!r}")
        return None
    if teacher == BASELINE_TEACHER:
        return teacher
    found = resolve_path(teacher, base)
    if found is None:
        problems.append(f"{place}.teacher: {teacher} does not exist; give a .safetensors or .nsk file "
                        f"or \"{BASELINE_TEACHER}\" (the recipe's model)")
    return str(found) if found else None


def _options(table: dict[str, Any], defaults: dict[str, Any], place: str, problems: list[str]) -> dict[str, Any]:
    """The stage keys its technique's dynamic training reads, each of its default's type."""
    options = {}
    for key, default in defaults.items():
        value = table.get(key, default)
        if type(value) is not type(default) or (isinstance(value, float) and not 0.0 <= value < 1.0):
            problems.append(f"{place}.{key}: must be a number in [0, 1), got {value!r}")
        options[key] = value
    return options


def _check_order(stages: list[Any], problems: list[str]) -> None:
    """After a dynamic stage (exits or widths), no structural change and no teacher: the exit
    stages are traced over the modules of that moment (a later replacement would not be seen) and
    the joint losses have no teacher term. One dynamic stage per model (the family refuses both)."""
    dynamic = None
    for i, table in enumerate(stages):
        verb = table.get("verb") if isinstance(table, dict) else None
        technique = technique_of(verb) if isinstance(verb, str) else None
        if dynamic is not None:
            if technique is not None and technique.structural:
                problems.append(f"stages[{i}].verb: {verb} after {dynamic} is not supported; put it before")
            elif "teacher" in table:
                problems.append(f"stages[{i}].teacher: after {dynamic} the joint loss trains; remove the teacher")
        elif technique is not None and technique.training is not None:
            dynamic = f"{verb} (stages[{i}])"


def _stage_options(technique: Technique | None, verb_name: str, table: dict[str, Any], epochs: int, place: str,
                   problems: list[str], meant: set[str] = frozenset()) -> Any:
    """Check how the stage trains (teacher, distill options); returns its Distill config."""
    from netshrink.distillation.config import Distill

    if verb_name == TRAIN and "config" in table:
        problems.append(f"{place}.config: {verb_name} takes no config; remove it")
    if verb_name == DISTILL:
        if "distill" in table:
            problems.append(f"{place}.distill: a distill stage takes its options in {place}.config")
        if "teacher" not in table and "teacher" not in meant:
            problems.append(f"{place}.teacher: a distill stage needs a teacher")
        options = build_config(Distill, table.get("config"), f"{place}.config", problems)
    elif technique is not None and technique.training is not None:
        if "teacher" in table or "distill" in table:
            problems.append(f"{place}.teacher: {verb_name} trains with its own joint loss; remove teacher/distill")
        return None
    elif "distill" in table and "teacher" not in table:
        problems.append(f"{place}.distill: options for a teacher; add {place}.teacher")
        return None
    elif "teacher" not in table:
        options = None
    else:
        options = build_config(Distill, table.get("distill"), f"{place}.distill", problems)
    if epochs == 0 and (technique is None or "teacher" in table):
        problems.append(f"{place}.epochs: a {verb_name} stage with a teacher or no config trains; give epochs >= 1")
    return options
