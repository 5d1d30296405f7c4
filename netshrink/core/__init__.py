"""Base layers every compression family plugs into: configs, registry, traversal, transform log."""

from netshrink.core.config import Config
from netshrink.core.errors import ConfigError, DataError, NetshrinkError, NetshrinkFormatError
from netshrink.core.finalize import Finalize, bake_parametrizations, finalize_
from netshrink.core.registry import (
    DynamicTraining,
    Technique,
    apply_,
    load_techniques,
    register,
    registered,
    registered_verbs,
    technique_for,
    technique_of,
    techniques,
)
from netshrink.core.selection import select
from netshrink.core.transform_log import (
    append_record,
    get_arch,
    get_log,
    get_section,
    get_sections,
    set_arch,
    set_log,
    set_section,
)

__all__ = [
    "Config", "ConfigError", "DataError", "DynamicTraining", "Finalize", "NetshrinkError", "NetshrinkFormatError",
    "Technique", "append_record", "apply_", "bake_parametrizations", "finalize_", "get_arch", "get_log",
    "get_section", "get_sections", "load_techniques", "register", "registered", "registered_verbs", "select",
    "set_arch",
    "set_log", "set_section", "technique_for", "technique_of", "techniques",
]
