"""One registry of techniques: every fact about a verb, registered together in one place.

Modelled on torchao's ``register_quantize_module_handler``: a new technique is one config plus one
function. ``apply_(model, config)`` looks up the technique of ``type(config)``, runs its handler and
records what it did in the model's transform log. The same registration says everything else the
rest of netshrink needs to know, so nothing outside this module compares technique names:

- ``name``: the one name the transform log, recipes and the CLI use (``aliases``: older recipe
  names still accepted);
- ``rebuild`` / ``check``: how ``load`` redoes the structural change from a log record, and how it
  refuses a record the handler would have refused, before anything is allocated;
- ``finalize``: the technique's part of ``finalize_``;
- ``structural``: whether it changes the module structure (recipes order stages by it);
- ``repair``: what the pipeline runs after the verb, before fine-tuning (BatchNorm re-estimation
  after a factorization);
- ``training``: for a technique that makes a model dynamic, how every later fine-tuning trains it
  (the joint loss) and how it is re-calibrated afterwards;
- ``stored_as``: the file encoding of the tensors its record changed (integer grids per group), so
  ``save`` stores them compactly without searching (its default effort does not search a wide
  float for grids: that search is what made a model dequantized from GGUF slow to save).

Techniques are found through the package entry-point group ``netshrink.techniques`` (each entry
names a module that registers on import): netshrink's own families are listed there in
``pyproject.toml``, and a user's package that declares an entry in the same group is found the same
way in a fresh process, so a file its technique wrote loads anywhere it is installed. The core
names no family.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import warnings
from collections.abc import Callable
from typing import Any

from torch import nn

from netshrink.core.config import Config
from netshrink.core.errors import ConfigError, NetshrinkFormatError, one_line
from netshrink.core.transform_log import append_record

#: the entry-point group techniques are registered under (``[project.entry-points."netshrink.techniques"]``)
ENTRY_POINT_GROUP = "netshrink.techniques"

Handler = Callable[[nn.Module, Config], dict[str, Any] | None]
"""``handler(model, config) -> details``: edits the model in place; the details (targets, new
shapes...) go into the log record beside the config."""
Rebuilder = Callable[[nn.Module, dict[str, Any]], None]
"""``rebuild(model, record)``: redo the structural part of a logged change on a fresh model."""
RecordCheck = Callable[[nn.Module, dict[str, Any]], None]
"""``check(model, record)``: raise ``NetshrinkFormatError`` (one line) for a record that the
handler could not have written for ``model`` as it stands (unknown layers, sizes that grow a layer,
ranks above a layer's rank...); allocates nothing."""
Finalizer = Callable[[nn.Module], None]
"""``finalize(model)``: the technique's part of ``finalize_`` (physical surgery), run before the
generic baking of parametrizations; structural surgery it does must itself go through ``apply_``
so the log records it."""
Repair = Callable[[nn.Module, Any], None]
"""``repair(model, data)``: what the pipeline runs right after the verb and before fine-tuning."""
StoredAs = Callable[[nn.Module, dict[str, Any]], dict[str, str]]
"""``stored_as(model, record) -> {tensor name: chain}``: the encoding ``save`` tries first for each tensor
the record changed (e.g. ``{"fc1.weight": "group_int"}``); names the model no longer has are
ignored, and a chain that does not hold the tensor exactly falls back to detection."""


@dataclasses.dataclass(frozen=True)
class DynamicTraining:
    """How a model that a technique made dynamic trains and is re-calibrated from then on.

    Args:
        loss: ``loss(model) -> loss_fn`` for ``fit(..., loss_fn=)`` (BranchyNet's joint loss, the
            sandwich rule); a dynamic model's loss has no teacher term.
        prepare: run on the model before each fine-tuning (e.g. the full width), or None.
        calibrate: ``calibrate(model, val_split, **options)`` after each fine-tuning (thresholds,
            the profile table), with the stage ``options`` below.
        options: extra recipe stage keys the calibration reads, with defaults (``max_drop``).
    """

    loss: Callable[[nn.Module], Callable]
    calibrate: Callable[..., None]
    prepare: Callable[[nn.Module], None] | None = None
    options: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Technique:
    """Everything netshrink knows about one technique (see the module docstring)."""

    name: str
    config_type: type[Config]
    handler: Handler
    rebuild: Rebuilder | None
    check: RecordCheck | None = None
    finalize: Finalizer | None = None
    structural: bool = False
    repair: Repair | None = None
    training: DynamicTraining | None = None
    verb: Callable[..., nn.Module] | None = None
    aliases: tuple[str, ...] = ()
    stored_as: StoredAs | None = None

    def check_record(self, model: nn.Module, record: dict[str, Any]) -> None:
        """Refuse (``NetshrinkFormatError``, one line) a record the handler would not have written:
        its config must parse as this technique's config and pass the config's own checks, then
        the technique's ``check`` sees it against ``model`` as it stands. Allocates nothing."""
        config = record.get("config")
        if not isinstance(config, dict):
            raise NetshrinkFormatError(f"{self.name} record has no config object")
        try:
            parsed = Config.from_dict(config)
        except Exception as error:  # noqa: BLE001 (the record comes from a file)
            raise NetshrinkFormatError(f"{self.name} record: {one_line(error)}") from None
        if type(parsed) is not self.config_type:
            raise NetshrinkFormatError(f"{self.name} record holds a {type(parsed).__name__} config, "
                                       f"not {self.config_type.__name__}")
        if self.check is not None:
            try:
                self.check(model, record)
            except NetshrinkFormatError as error:
                raise NetshrinkFormatError(f"{self.name} record: {one_line(error)}") from None
            except Exception as error:  # noqa: BLE001 (the record comes from a file)
                raise NetshrinkFormatError(f"{self.name} record is malformed ({one_line(error)})") from None


_BY_CONFIG: dict[type[Config], Technique] = {}
_BY_NAME: dict[str, Technique] = {}
_loaded = False


def load_techniques() -> None:
    """Import every module of the ``netshrink.techniques`` entry-point group once: netshrink's own
    families first, so a user's module that imports a netshrink verb while it loads finds them, then
    every installed package's. A third-party module that fails to import is skipped with a one-line
    warning; netshrink's own failing is an error (and the next call tries again)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    entries = sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP),
                     key=lambda entry: not entry.value.startswith("netshrink."))
    for entry in entries:
        try:
            entry.load()
        except Exception as error:
            if entry.value.startswith("netshrink."):
                _loaded = False
                raise
            warnings.warn(f"netshrink technique {entry.name!r} ({entry.value}) failed to import: "
                          f"{one_line(error)}", stacklevel=2)


def register(config_type: type[Config], name: str, *, rebuild: Rebuilder | None, check: RecordCheck | None = None,
             finalize: Finalizer | None = None, structural: bool = False, repair: Repair | None = None,
             training: DynamicTraining | None = None, verb: Callable[..., nn.Module] | None = None,
             aliases: tuple[str, ...] = (), stored_as: StoredAs | None = None) -> Callable[[Handler], Handler]:
    """Decorator registering ``handler(model, config)`` as the technique for ``config_type``.

    Args:
        config_type: the config class the handler takes.
        name: the one name of the technique: the transform log's, the recipes' and the CLI's (unique).
        rebuild: how ``load`` redoes the structural change from the log record, or ``None`` when
            the technique changes values only. Required: there is no default to forget.
        check: refuses a log record the handler would have refused (see ``RecordCheck``); every
            technique with a ``rebuild`` should give one.
        finalize: the technique's part of ``finalize_``, if it has one.
        structural: the technique changes the model's modules or shapes.
        repair: run by the pipeline after the verb, before fine-tuning.
        training: for a technique that makes the model dynamic, how it trains from then on.
        verb: the public ``verb_(model, config) -> model`` function (exported from ``netshrink``).
        aliases: other names recipes may use for it.
        stored_as: the encodings ``save`` tries first for the tensors a record changed (see ``StoredAs``).

    Example:
        >>> @register(MagnitudePrune, "magnitude_prune", rebuild=None, verb=prune_, aliases=("prune",))
        ... def _prune(model, config): ...
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")

    def wrap(handler: Handler) -> Handler:
        if config_type in _BY_CONFIG:
            raise ValueError(f"a technique for {config_type.__name__} is already registered")
        for key in (name, *aliases):
            if key in _BY_NAME:
                raise ValueError(f"name {key!r} is already registered (by {_BY_NAME[key].config_type.__name__})")
        technique = Technique(name, config_type, handler, rebuild, check, finalize, structural, repair, training,
                              verb, tuple(aliases), stored_as)
        _BY_CONFIG[config_type] = technique
        for key in (name, *aliases):
            _BY_NAME[key] = technique
        return handler

    return wrap


def apply_(model: nn.Module, config: Config) -> nn.Module:
    """Run the registered technique for ``config`` on ``model`` in place; log it; return model."""
    technique = _BY_CONFIG.get(type(config))
    if technique is None:
        raise ConfigError(
            f"{type(config).__name__} is not a technique's config; registered: "
            f"{sorted(c.__name__ for c in _BY_CONFIG)}"
        )
    from netshrink.measure.size import remember_original_size  # measure imports core

    remember_original_size(model)  # the compression-rate baseline, before anything changes
    details = technique.handler(model, config) or {}
    append_record(model, technique.name, config, **details)
    return model


def apply_as(verb: Callable[..., nn.Module], model: nn.Module, config: Config, family: str) -> nn.Module:
    """``apply_`` for a family verb shared by several configs (``prune_``, ``quantize_``): a config
    registered with another verb is a one-line ConfigError listing the verb's own configs."""
    technique = technique_for(config)
    if technique is None or technique.verb is not verb:
        known = ", ".join(t.config_type.__name__ for t in techniques() if t.verb is verb)
        raise ConfigError(f"{verb.__name__} takes a {family} config ({known}), got {type(config).__name__}; use "
                          "apply_ for other techniques")
    return apply_(model, config)


def stored_encodings(model: nn.Module, log: list[dict[str, Any]]) -> dict[str, str]:
    """Tensor name -> the encoding its last technique says it is stored in (``Technique.stored_as``),
    over ``model``'s whole ``log``; a later record's word replaces an earlier one's. A later record
    without a word (a pruning after the quantization) leaves it in place: ``save`` keeps a word only
    where it holds the tensor exactly, so a stale one costs bytes, never values, and ``save`` reads
    the words at the default effort only (``effort="max"`` searches every encoding)."""
    found: dict[str, str] = {}
    for record in log:
        technique = technique_of(record.get("verb", ""))
        if technique is not None and technique.stored_as is not None:
            found.update(technique.stored_as(model, record))
    return found


def technique_of(name: str) -> Technique | None:
    """The technique registered under ``name`` or one of its aliases (installed techniques are
    imported on first need), or None."""
    if name not in _BY_NAME:
        load_techniques()
    return _BY_NAME.get(name)


def technique_for(config: Config | type[Config]) -> Technique | None:
    """The technique whose config is ``config`` (an instance or the class), or None."""
    load_techniques()
    return _BY_CONFIG.get(config if isinstance(config, type) else type(config))


def techniques() -> list[Technique]:
    """Every registered technique, by name."""
    load_techniques()
    return sorted(_BY_CONFIG.values(), key=lambda t: t.name)


def registered() -> dict[str, str]:
    """Config name -> technique name, for every registered technique."""
    return {t.config_type.__name__: t.name for t in techniques()}


def registered_verbs() -> list[str]:
    """Every technique name the loader can replay."""
    return [t.name for t in techniques()]
