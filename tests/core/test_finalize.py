"""finalize_: bakes parametrizations, runs each logged technique's finalize part, no-op otherwise."""

import dataclasses

import torch
from torch import nn
from torch.nn.utils import parametrize

import netshrink
from netshrink.core import Config, apply_, finalize_, get_log, register
from tests.techniques import ShrinkHead


class _Half(nn.Module):
    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight / 2


@dataclasses.dataclass(frozen=True)
class _HalveThenShrink(Config):
    """Training-time halving of fc weights; finalize bakes it and shrinks the head."""


def _finalize_halve(model: nn.Module) -> None:
    apply_(model, ShrinkHead(outputs=3))


@register(_HalveThenShrink, "test_halve_then_shrink", rebuild=None, finalize=_finalize_halve)
def _halve(model: nn.Module, config: _HalveThenShrink) -> None:
    parametrize.register_parametrization(model[0], "weight", _Half())


def test_finalize_is_exported_and_a_no_op_on_an_untouched_model():
    model = nn.Sequential(nn.Linear(4, 3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert netshrink.finalize_(model) is model
    assert get_log(model) == []
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_finalize_bakes_any_parametrization_keeping_the_parameter():
    model = nn.Sequential(nn.Linear(4, 3))
    original = model[0].weight.detach().clone()
    parametrize.register_parametrization(model[0], "weight", _Half())
    parameter = model[0].parametrizations.weight.original
    finalize_(model)
    assert not parametrize.is_parametrized(model[0])
    assert model[0].weight is parameter and torch.equal(model[0].weight, original / 2)
    assert get_log(model)[-1]["verb"] == "finalize" and get_log(model)[-1]["baked"] == ["0.weight"]


def test_finalize_runs_the_technique_finalizer_once_and_logs_its_surgery():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Linear(4, 4)
            self.fc2 = nn.Linear(4, 5)

        def __getitem__(self, index: int) -> nn.Module:
            return self.body

        def forward(self, x):
            return self.fc2(self.body(x))

    model = apply_(Net(), _HalveThenShrink())
    finalize_(model)
    verbs = [record["verb"] for record in get_log(model)]
    assert verbs == ["test_halve_then_shrink", "test_shrink_head", "finalize"]
    assert model.fc2.out_features == 3 and not parametrize.is_parametrized(model.body)
    finalize_(model)  # nothing pending: untouched
    assert [record["verb"] for record in get_log(model)] == verbs
