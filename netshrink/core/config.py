"""Config base: frozen, versioned dataclasses that round-trip through plain dicts (and so TOML/JSON).

Every technique is a verb plus a config (the torchao ``quantize_(model, config)`` shape); the
config's class name and version are stored in the transform log so a file can name what made it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from netshrink.core.errors import ConfigError

_CONFIG_TYPES: dict[str, type[Config]] = {}


@dataclasses.dataclass(frozen=True)
class Config:
    """Base class of every netshrink config. Subclasses are frozen dataclasses.

    ``VERSION`` is bumped when a field's meaning changes; ``from_dict`` refuses versions it
    does not know, so an old reader never silently misreads a new file.
    """

    VERSION: ClassVar[int] = 1
    #: fields that name layers: a sequence of names, or a dict keyed by layer name (``layer_names``)
    LAYER_FIELDS: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _CONFIG_TYPES[cls.__name__] = cls

    def to_dict(self) -> dict[str, Any]:
        """Plain dict with ``type`` and ``version`` keys plus every field but ``unlogged`` ones."""
        fields = {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)
                  if f.metadata.get("logged", True)}
        return {"type": type(self).__name__, "version": self.VERSION, **fields}

    def layer_names(self) -> list[str]:
        """Every layer name the config refers to (its ``LAYER_FIELDS``), so a recipe can check them
        against the model before anything trains."""
        names: list[str] = []
        for field in self.LAYER_FIELDS:
            value = getattr(self, field)
            if isinstance(value, dict):
                names += [str(k) for k in value]
            elif isinstance(value, (list, tuple)):
                names += [str(v) for v in value]
        return names

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Config:
        """Rebuild a config from ``to_dict`` output; unknown types, versions or fields are errors."""
        data = dict(data)
        name = data.pop("type", None)
        version = data.pop("version", None)
        cls = _CONFIG_TYPES.get(name) if isinstance(name, str) else None
        if cls is None:
            raise ConfigError(f"unknown config type {name!r}; known: {sorted(_CONFIG_TYPES)}")
        if version != cls.VERSION:
            raise ConfigError(
                f"{name} version {version!r} is not supported (this netshrink reads version "
                f"{cls.VERSION}); upgrade netshrink"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        extra = set(data) - known
        if extra:
            raise ConfigError(f"{name} has no field(s) {sorted(extra)}; known: {sorted(known)}")
        kwargs = {
            k: tuple(v) if isinstance(v, list) else v for k, v in data.items()
        }
        return cls(**kwargs)


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Config):
        return value.to_dict()
    return value


def unlogged() -> Any:
    """A config field that is not data (a ``filter_fn``, calibration batches): default None, left
    out of equality, ``repr`` and ``to_dict`` (the log records what it chose, e.g. the layers)."""
    return dataclasses.field(default=None, compare=False, repr=False, metadata={"logged": False})

