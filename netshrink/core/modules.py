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


def independent_copy(model: nn.Module) -> nn.Module:
    """``copy.deepcopy(model)`` whose parametrized modules get classes of their own.

    torch's parametrize gives each parametrized module a generated class holding the property of
    its tensor, and a deepcopy shares that class; ``remove_parametrizations`` (so ``finalize_``) on
    the copy deletes the property from the shared class and leaves the original without its
    ``weight``. Each copied parametrized module here gets a fresh class with the same bases and
    attributes, so baking the copy leaves the original as it was.
    """
    import copy

    from torch.nn.utils import parametrize

    twin = copy.deepcopy(model)
    for module in twin.modules():
        if parametrize.is_parametrized(module):
            shared = module.__class__
            module.__class__ = type(shared.__name__, shared.__bases__, dict(shared.__dict__))
    return twin
