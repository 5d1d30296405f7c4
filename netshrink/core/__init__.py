"""Base layers every compression family plugs into: configs, registry, traversal, transform log."""

from netshrink.core.config import Config
from netshrink.core.errors import ConfigError, DataError, NetshrinkError, NetshrinkFormatError
from netshrink.core.finalize import Finalize, bake_parametrizations, finalize_
from netshrink.core.registry import Technique, apply_, register, registered, registered_verbs, technique_of
from netshrink.core.select import select
from netshrink.core.transform_log import append_record, get_arch, get_log, set_arch, set_log

__all__ = [
    "Config", "ConfigError", "DataError", "Finalize", "NetshrinkError", "NetshrinkFormatError",
    "Technique", "append_record", "apply_", "bake_parametrizations", "finalize_", "get_arch",
    "get_log", "register", "registered", "registered_verbs", "select", "set_arch", "set_log", "technique_of",
]
