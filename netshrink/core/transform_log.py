"""The transform log: the replayable history of what netshrink did to a model.

Each record names the verb, its config (as a dict) and details such as the layers it touched or
their new shapes. The log lives on the model (attribute ``netshrink_log``) together with the
architecture spec (``netshrink_arch``: zoo name and kwargs); the .nsk container stores both and the
loader rebuilds the architecture from them. The log holds replayable transforms only: measurements
that travel with a model (a dynamic model's profile table) are named metadata sections
(``netshrink_sections``), each replaced, never appended, when measured again.
"""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from netshrink.core.config import Config

LOG_ATTR = "netshrink_log"
ARCH_ATTR = "netshrink_arch"
SECTIONS_ATTR = "netshrink_sections"


def get_log(model: nn.Module) -> list[dict[str, Any]]:
    """The model's transform log (a copy); empty for a model netshrink has not touched."""
    return copy.deepcopy(getattr(model, LOG_ATTR, []))


def set_log(model: nn.Module, records: list[dict[str, Any]]) -> None:
    """Replace the model's transform log (used by the loader)."""
    object.__setattr__(model, LOG_ATTR, copy.deepcopy(list(records)))


def append_record(model: nn.Module, verb: str, config: Config | None, **details: Any) -> None:
    """Append one record ``{"verb", "config", **details}`` to the model's log."""
    record = {"verb": verb, "config": config.to_dict() if config is not None else None, **details}
    set_log(model, get_log(model) + [record])


def get_arch(model: nn.Module) -> dict[str, Any] | None:
    """``{"name": zoo name, "kwargs": {...}}`` for a zoo model, else None (a user's own class)."""
    arch = getattr(model, ARCH_ATTR, None)
    return copy.deepcopy(arch) if arch is not None else None


def set_arch(model: nn.Module, name: str, kwargs: dict[str, Any]) -> None:
    """Record how to rebuild this model from the zoo."""
    object.__setattr__(model, ARCH_ATTR, {"name": name, "kwargs": copy.deepcopy(kwargs)})


def get_sections(model: nn.Module) -> dict[str, Any]:
    """Every metadata section of the model (a copy): name -> JSON-serialisable value."""
    return copy.deepcopy(getattr(model, SECTIONS_ATTR, {}))


def get_section(model: nn.Module, name: str) -> Any:
    """The metadata section ``name`` (a copy), or None."""
    return copy.deepcopy(getattr(model, SECTIONS_ATTR, {}).get(name))


def set_section(model: nn.Module, name: str, value: Any) -> None:
    """Replace the metadata section ``name`` (None removes it); ``save`` writes every section."""
    sections = get_sections(model)
    if value is None:
        sections.pop(name, None)
    else:
        sections[name] = copy.deepcopy(value)
    object.__setattr__(model, SECTIONS_ATTR, sections)
