"""The check every technique's bad-input test makes: the verb refuses in one line, and the model is
left as it was (no log record, the same tensors under the same names)."""

import pytest
import torch

from netshrink.core.errors import ConfigError
from netshrink.core.transform_log import get_log


def assert_refused_untouched(model, apply, message: str) -> None:
    """``apply(model)`` raises a one-line ``ConfigError`` matching ``message`` and changes nothing."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError, match=message) as info:
        apply(model)
    assert "\n" not in str(info.value) and get_log(model) == []
    assert state.keys() == model.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
