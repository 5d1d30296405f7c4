"""Module access by qualified name: get and replace submodules (``core.select`` picks them)."""

from __future__ import annotations

from torch import nn


def get_module(model: nn.Module, qualified_name: str) -> nn.Module:
    """The submodule at ``a.b.0.c`` (``""`` is the model itself)."""
    return model.get_submodule(qualified_name) if qualified_name else model


def set_module(model: nn.Module, qualified_name: str, new: nn.Module) -> None:
    """Replace the submodule at ``qualified_name`` with ``new``."""
    parent_name, _, child = qualified_name.rpartition(".")
    setattr(get_module(model, parent_name), child, new)
