"""Base layers every compression family plugs into: configs, registry, traversal, transform log."""

from netshrink.core.config import Config
from netshrink.core.errors import ConfigError, DataError, NetshrinkError, NetshrinkFormatError
from netshrink.core.registry import apply_, register, registered
from netshrink.core.transform_log import append_record, get_arch, get_log, set_arch, set_log

__all__ = [
    "Config", "ConfigError", "DataError", "NetshrinkError", "NetshrinkFormatError",
    "apply_", "register", "registered", "append_record", "get_arch", "get_log", "set_arch",
    "set_log",
]
