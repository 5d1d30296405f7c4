"""Model zoo: ``create(name, **kwargs)``, ``list_models()``."""

from netshrink.models import convnet as _convnet  # noqa: F401  (registers)
from netshrink.models import lenet as _lenet  # noqa: F401  (registers)
from netshrink.models.registry import create, create_matching, list_models, register_model

__all__ = ["create", "create_matching", "list_models", "register_model"]
