"""Module traversal: find layers by predicate, get and replace them by qualified name."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from torch import nn

FilterFn = Callable[[nn.Module, str], bool]


def weighted_layers(module: nn.Module, name: str) -> bool:
    """Default filter: Linear and Conv layers (the ones compression acts on)."""
    return isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))


def iter_modules(model: nn.Module, filter_fn: FilterFn = weighted_layers) -> Iterator[tuple[str, nn.Module]]:
    """Yield ``(qualified_name, module)`` for every submodule that ``filter_fn`` accepts."""
    for name, module in model.named_modules():
        if filter_fn(module, name):
            yield name, module


def get_module(model: nn.Module, qualified_name: str) -> nn.Module:
    """The submodule at ``a.b.0.c`` (``""`` is the model itself)."""
    return model.get_submodule(qualified_name) if qualified_name else model


def set_module(model: nn.Module, qualified_name: str, new: nn.Module) -> None:
    """Replace the submodule at ``qualified_name`` with ``new``."""
    parent_name, _, child = qualified_name.rpartition(".")
    setattr(get_module(model, parent_name), child, new)
