"""The model a command reads: a checkpoint or a .nsk file, checked against the data it is given."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load_any_model(path: str) -> Any:
    """A trained checkpoint/model (.safetensors) or a compressed .nsk file."""
    from netshrink.core.errors import ConfigError

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{path} does not exist; give a .safetensors checkpoint or a .nsk file")
    if p.suffix == ".nsk":
        from netshrink.codec.container import load

        return load(p)
    from netshrink.train import load_model

    return load_model(p)


def check_fits(model: Any, data: Any, source: str) -> None:
    """A one-line error, not a shape traceback, when the model was made for other data."""
    import torch

    from netshrink.core.errors import ConfigError

    sample = data.val.x[:1] if len(data.val) else data.test.x[:1]  # a shape check; validation first
    try:
        with torch.no_grad():
            logits = model.eval()(sample)
    except RuntimeError:
        raise ConfigError(f"{source} does not accept {data.name} inputs of shape {tuple(data.input_shape)}; "
                          "evaluate it on the data it was trained for") from None
    if logits.shape[-1] < data.num_classes:
        raise ConfigError(f"{source} predicts {logits.shape[-1]} classes but {data.name} has "
                          f"{data.num_classes}; evaluate it on the data it was trained for")
