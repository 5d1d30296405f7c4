"""netshrink: compress PyTorch models into small, deployable files with measured costs.

The public names are imported lazily so ``import netshrink`` stays light. The techniques' verbs and
configs (``prune_``, ``MagnitudePrune``...) are not listed here: they come from the registry, each
technique's one registration (``netshrink.core.registry``), so a technique is exported where it is
registered, a user's installed one included.
"""

from __future__ import annotations

from typing import Any

from netshrink.lazy_exports import lazy_getattr

__version__ = "0.1.0"

#: the names that are not a technique's verb or config
_EXPORTS = {
    "save": "netshrink.codec.container",
    "load": "netshrink.codec.container",
    "create": "netshrink.models",
    "list_models": "netshrink.models",
    "load_dataset": "netshrink.data",
    "fit": "netshrink.train",
    "FitConfig": "netshrink.train",
    "distill": "netshrink.distillation",
    "Distill": "netshrink.distillation",
    "recover": "netshrink.distillation",
    "Recover": "netshrink.distillation",
    "measure_model": "netshrink.measure",
    "apply_": "netshrink.core",
    "finalize_": "netshrink.core",
    "Finalize": "netshrink.core",
    "get_log": "netshrink.core",
    "NetshrinkError": "netshrink.core",
    "NetshrinkFormatError": "netshrink.core",
    "GradualPrune": "netshrink.prune",
    "iterative_prune": "netshrink.prune",
    "lottery_ticket": "netshrink.prune",
    "sensitivity": "netshrink.prune",
    "sensitivity_plan": "netshrink.prune",
    "set_width": "netshrink.dynamic",
    "set_exit": "netshrink.dynamic",
    "Profile": "netshrink.dynamic",
    "profile_": "netshrink.dynamic",
    "load_recipe": "netshrink.pipeline",
    "run_recipe": "netshrink.pipeline",
    "Budget": "netshrink.autocompress",
    "auto": "netshrink.autocompress",
}

_static_getattr = lazy_getattr(__name__, _EXPORTS)


def technique_exports() -> dict[str, Any]:
    """Every registered technique's public verb and config, by name."""
    from netshrink.core.registry import techniques

    names: dict[str, Any] = {}
    for technique in techniques():
        if technique.verb is not None:
            names[technique.verb.__name__] = technique.verb
            names[technique.config_type.__name__] = technique.config_type
    return names


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return _static_getattr(name)
    if name == "__all__":
        return sorted({*_EXPORTS, *technique_exports()})
    if not name.startswith("_"):
        exported = technique_exports().get(name)
        if exported is not None:
            return exported
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
