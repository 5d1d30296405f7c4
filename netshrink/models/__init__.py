"""Model zoo: ``create(name, **kwargs)``, ``list_models()``."""

from netshrink.models import convnet as _convnet  # noqa: F401  (registers)
from netshrink.models import ghostnet as _ghostnet  # noqa: F401  (registers)
from netshrink.models import lenet as _lenet  # noqa: F401  (registers)
from netshrink.models import mobilenet as _mobilenet  # noqa: F401  (registers)
from netshrink.models import shufflenet as _shufflenet  # noqa: F401  (registers)
from netshrink.models import slimmable_convnet as _slimmable_convnet  # noqa: F401  (registers)
from netshrink.models.data_shape import create_for_data
from netshrink.models.registry import (
    check_rebuildable,
    create,
    create_matching,
    list_models,
    model_arguments,
    register_model,
)

__all__ = ["check_rebuildable", "create", "create_for_data", "create_matching", "list_models", "model_arguments",
           "register_model"]
