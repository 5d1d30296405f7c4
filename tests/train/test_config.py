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
    ({"checkpoint_every_steps": -1}, "checkpoint_every_steps"),
    ({"checkpoint_every_steps": 1.5}, "checkpoint_every_steps"),
    ({"deterministic": 1}, "deterministic"),
])
def test_invalid_values_raise_one_line_config_error(kwargs, words):
    with pytest.raises(ConfigError, match=words) as info:
        FitConfig(**kwargs)
    assert "\n" not in str(info.value)


def test_round_trips_through_dict_and_json():
    config = FitConfig(epochs=3, batch_size=64, lr=0.1, optimizer="adamw", schedule="step",
                       warmup_epochs=1, label_smoothing=0.1, augment=True, seed=7, eval_every=2,
                       checkpoint_every_steps=100, deterministic=True)
    data = json.loads(json.dumps(config.to_dict()))
    assert data["type"] == "FitConfig" and data["version"] == FitConfig.VERSION
    assert Config.from_dict(data) == config


def test_from_dict_validates():
    data = FitConfig().to_dict() | {"optimizer": "lion"}
    with pytest.raises(ConfigError, match="optimizer"):
        Config.from_dict(data)


def test_dict_without_fields_added_later_gets_their_defaults():
    """Checkpoints written before ``checkpoint_every_steps`` and ``deterministic`` existed hold
    configs without them; they read back as the defaults, so those runs still resume."""
    old = {k: v for k, v in FitConfig(epochs=3).to_dict().items()
           if k not in ("checkpoint_every_steps", "deterministic")}
    assert Config.from_dict(old) == FitConfig(epochs=3)


def test_trains_like_ignores_only_the_checkpoint_cadence():
    config = FitConfig(epochs=3, checkpoint_every_steps=50)
    assert config.trains_like(FitConfig(epochs=3))
    assert not config.trains_like(FitConfig(epochs=4, checkpoint_every_steps=50))
    assert not config.trains_like(FitConfig(epochs=3, checkpoint_every_steps=50, deterministic=True))
