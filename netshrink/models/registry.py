"""Model zoo registry: ``create(name, **kwargs)`` and ``list_models()`` (after timm's _registry).

A registered model is rebuildable from its name and kwargs alone: ``create`` records both on the
model (``netshrink_arch``) and the .nsk container relies on that to rebuild the architecture.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from netshrink.core.errors import ConfigError, NetshrinkFormatError, one_line
from netshrink.core.transform_log import set_arch

if TYPE_CHECKING:
    from netshrink.core.rebuild import Budget

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: register a builder under its function name. Kwargs must be JSON-serialisable."""
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    """Names of every registered model."""
    return sorted(_MODELS)


def model_arguments(name: str) -> list[str]:
    """The keyword arguments zoo model ``name`` takes."""
    builder = _MODELS.get(name)
    if builder is None:
        raise ConfigError(f"unknown model {name!r}; choose one of {list_models()}")
    return list(inspect.signature(builder).parameters)


def create(name: str, **kwargs: Any) -> nn.Module:
    """Build a zoo model by name; the name and kwargs are recorded on it for rebuilding."""
    params = model_arguments(name)
    unknown = set(kwargs) - set(params)
    if unknown:
        raise ConfigError(f"model {name!r} takes no argument(s) {sorted(unknown)}; it takes {sorted(params)}")
    model = _MODELS[name](**kwargs)
    set_arch(model, name, {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()})
    return model


#: a file's kwargs may build at most this many times the elements it stores (structural
#: transforms in its log may shrink the model), or ``BUILD_SLACK`` elements, whichever is more
BUILD_RATIO = 64
BUILD_SLACK = 2 ** 24


def create_matching(name: str, kwargs: Any, shapes: dict[str, tuple[int, ...]],
                    log: list[dict[str, Any]] | None = None, max_elements: int | None = None,
                    budget: Budget | None = None) -> nn.Module:
    """Build the zoo model that stored weights were saved from, refusing one they do not fit.

    Files (checkpoints, .nsk) name their architecture and transform log; a damaged or hostile
    file could name kwargs that make a huge model. So the model is first built, and the log
    replayed, on the ``meta`` device (no memory); it must not be much larger than what the file
    stores (nor above ``max_elements``, a reader's budget such as a .nsk file's ``max_params``),
    the build and every step of the replay must stay within ``budget`` (``rebuild.metered``: the
    bytes allocated and modules registered, summed over the steps), and its state-dict shapes must
    equal ``shapes``; only then is it built for real (metered the same way).
    Raises ConfigError (or NetshrinkFormatError for a log this netshrink cannot replay or a budget
    it passes).
    """
    if not isinstance(kwargs, dict):
        raise ConfigError(f"model kwargs must be an object, got {type(kwargs).__name__}")
    if name not in _MODELS:
        raise ConfigError(f"architecture {str(name)[:40]!r} is not in the model zoo {list_models()}")
    check_rebuildable(name, kwargs, shapes, log, max_elements, budget)
    return _builder(name, kwargs, log)(budget=budget)


def _builder(name: str, kwargs: dict[str, Any], log: list[dict[str, Any]] | None) -> Callable[..., nn.Module]:
    """``build(replayed=True, budget=None)``: the zoo model, with the log replayed, metered by
    ``budget``; a failure is a ConfigError (kwargs and log records may come from a file), an
    unknown verb or a passed budget a NetshrinkFormatError."""
    from netshrink.core.rebuild import metered, replay

    def build(replayed: bool = True, budget: Budget | None = None) -> nn.Module:
        try:
            with metered(budget):
                model = create(name, **kwargs)
                return replay(model, log or []) if replayed else model
        except NetshrinkFormatError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise ConfigError(f"cannot build {name!r} from kwargs {kwargs}: {type(exc).__name__}: "
                              f"{one_line(exc)}") from None

    return build


def check_rebuildable(name: str, kwargs: dict[str, Any], shapes: dict[str, tuple[int, ...]],
                      log: list[dict[str, Any]] | None = None, max_elements: int | None = None,
                      budget: Budget | None = None) -> None:
    """Check on the ``meta`` device (no memory) that ``name(**kwargs)`` with ``log`` replayed has
    exactly the state-dict ``shapes``, is not much larger than them, and is built and replayed
    within ``budget``. ``save`` calls it so a file that ``load`` could not rebuild is never written;
    ``create_matching`` before building."""
    build = _builder(name, kwargs, log)
    with torch.device("meta"):
        unreplayed = sum(t.numel() for t in build(replayed=False).state_dict().values())
        declared = sum(math.prod(shape) for shape in shapes.values())
        limit = max(BUILD_RATIO * declared, BUILD_SLACK)
        if unreplayed > (limit if max_elements is None else min(limit, max_elements)):
            raise ConfigError(f"kwargs {kwargs} build {name!r} with {unreplayed} elements, far more than "
                              f"the {declared} stored")
        probe = build(budget=budget)
    expected = {key: tuple(t.shape) for key, t in probe.state_dict().items()}
    found = {key: tuple(shape) for key, shape in shapes.items()}
    if expected != found:
        differing = sorted(k for k in expected.keys() | found.keys() if expected.get(k) != found.get(k))
        raise ConfigError(f"the stored weights do not fit {name}({kwargs}): tensors {differing[:5]} differ")
