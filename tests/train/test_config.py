import json

import pytest

from netshrink.core.config import Config
from netshrink.core.errors import ConfigError
from netshrink.train import FitConfig


@pytest.mark.parametrize("kwargs, words", [
    ({"epochs": 0}, "epochs"),
    ({"epochs": 2.5}, "epochs"),
    ({"batch_size": 0}, "batch_size"),
    ({"lr": 0.0}, "lr"),
    ({"lr": float("nan")}, "lr"),
    ({"optimizer": "rmsprop"}, "optimizer"),
    ({"momentum": 1.0}, "momentum"),
    ({"weight_decay": -1e-4}, "weight_decay"),
    ({"schedule": "linear"}, "schedule"),
    ({"warmup_epochs": 11}, "warmup_epochs"),
    ({"label_smoothing": 1.0}, "label_smoothing"),
    ({"augment": "yes"}, "augment"),
    ({"seed": -1}, "seed"),
    ({"eval_every": 0}, "eval_every"),
])
def test_invalid_values_raise_one_line_config_error(kwargs, words):
    with pytest.raises(ConfigError, match=words) as info:
        FitConfig(**kwargs)
    assert "\n" not in str(info.value)


def test_round_trips_through_dict_and_json():
    config = FitConfig(epochs=3, batch_size=64, lr=0.1, optimizer="adamw", schedule="step",
                       warmup_epochs=1, label_smoothing=0.1, augment=True, seed=7, eval_every=2)
    data = json.loads(json.dumps(config.to_dict()))
    assert data["type"] == "FitConfig" and data["version"] == FitConfig.VERSION
    assert Config.from_dict(data) == config


def test_from_dict_validates():
    data = FitConfig().to_dict() | {"optimizer": "lion"}
    with pytest.raises(ConfigError, match="optimizer"):
        Config.from_dict(data)
