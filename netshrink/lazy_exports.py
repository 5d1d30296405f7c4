"""Lazy package exports: ``import netshrink`` (and each family package) stays light, so the CLI
(``netshrink.cli``) builds its parser without importing torch; a name's module is imported on
first access."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_getattr(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` (PEP 562) resolving ``exports[name]`` (a module path) on use."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    return __getattr__
