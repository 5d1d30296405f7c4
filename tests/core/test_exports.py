"""The package's exports come from the registry: every technique's verb and config, one shape each."""

import inspect

import pytest
import torch

import netshrink
from netshrink.core import ConfigError, get_log, techniques


def test_every_techniques_verb_and_config_is_exported_from_netshrink():
    listed = set(netshrink.__all__)
    for technique in techniques():
        if technique.verb is None:
            continue
        assert getattr(netshrink, technique.verb.__name__) is technique.verb
        assert getattr(netshrink, technique.config_type.__name__) is technique.config_type
        assert {technique.verb.__name__, technique.config_type.__name__} <= listed


def test_every_verb_takes_a_model_and_a_required_config():
    for technique in techniques():
        if technique.verb is None:
            continue
        parameters = list(inspect.signature(technique.verb).parameters.values())
        assert [p.name for p in parameters] == ["model", "config"], technique.name
        assert all(p.default is inspect.Parameter.empty for p in parameters), technique.name


def test_a_verb_refuses_another_familys_config():
    with pytest.raises(ConfigError, match="prune_ takes a pruning config"):
        netshrink.prune_(torch.nn.Linear(3, 3), netshrink.Cluster(bits=4))


def test_distill_is_a_function_and_the_package_has_its_own_name():
    import netshrink.distillation

    assert inspect.isfunction(netshrink.distill)
    assert netshrink.distillation.distill is netshrink.distill


def test_save_encodings_name_the_models_tensors(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    with pytest.raises(ConfigError, match=r"encodings names \['fc9.weight'\]"):
        netshrink.save(model, tmp_path / "m.nsk", encodings={"fc9.weight": "dense"})
    assert not (tmp_path / "m.nsk").exists()
    netshrink.save(model, tmp_path / "m.nsk", encodings={"0.weight": "dense"})
    assert get_log(netshrink.load(tmp_path / "m.nsk", model=torch.nn.Sequential(torch.nn.Linear(4, 4)))) == []
