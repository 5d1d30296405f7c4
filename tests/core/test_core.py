import dataclasses

import pytest
from torch import nn

from netshrink.core import Config, ConfigError, apply_, get_log, register, registered
from netshrink.core.modules import get_module, set_module
from netshrink.core.selection import select


@dataclasses.dataclass(frozen=True)
class _Scale(Config):
    """Test config: multiply every Linear weight by ``factor``."""

    factor: float = 2.0
    layers: tuple[str, ...] = ()


@register(_Scale, "scale", rebuild=None)
def _scale(model: nn.Module, config: _Scale) -> dict:
    names = []
    for name, module in select(model, filter_fn=lambda m, n: isinstance(m, nn.Linear)).items():
        module.weight.data.mul_(config.factor)
        names.append(name)
    return {"targets": names}


def test_config_round_trips_through_dict():
    config = _Scale(factor=3.0, layers=("a", "b"))
    data = config.to_dict()
    assert data == {"type": "_Scale", "version": 1, "factor": 3.0, "layers": ["a", "b"]}
    assert Config.from_dict(data) == config


@pytest.mark.parametrize("data,message", [
    ({"type": "Nope", "version": 1}, "unknown config type"),
    ({"type": "_Scale", "version": 99}, "version"),
    ({"type": "_Scale", "version": 1, "colour": "red"}, "no field"),
])
def test_config_from_dict_refuses_what_it_does_not_know(data, message):
    with pytest.raises(ConfigError, match=message):
        Config.from_dict(data)


def test_apply_runs_handler_and_logs_it():
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))
    before = model[0].weight.detach().clone()
    assert apply_(model, _Scale(factor=2.0)) is model
    assert (model[0].weight == 2 * before).all()
    log = get_log(model)
    assert log == [{"verb": "scale", "config": _Scale(2.0).to_dict(), "targets": ["0", "2"]}]
    assert registered()["_Scale"] == "scale"


def test_apply_unknown_config_and_double_registration():
    @dataclasses.dataclass(frozen=True)
    class _Unregistered(Config):
        pass

    with pytest.raises(ConfigError, match="is not a technique.s config"):
        apply_(nn.Linear(1, 1), _Unregistered())
    with pytest.raises(ValueError, match="already registered"):
        register(_Scale, "scale", rebuild=None)(_scale)


def test_get_and_set_module_by_qualified_name():
    model = nn.Sequential(nn.Sequential(nn.Linear(2, 2)), nn.ReLU())
    assert get_module(model, "0.0") is model[0][0]
    replacement = nn.Identity()
    set_module(model, "0.0", replacement)
    assert model[0][0] is replacement and get_module(model, "") is model
