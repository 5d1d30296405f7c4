"""``calibration.layerwise``: block by block, each group of layers sees exactly the inputs a full
pass of the model gives once the earlier groups were changed; models without a chained block list
run as one block; layers that never run are one line."""

import copy

import pytest
import torch
from torch import nn

from netshrink.calibration.batches import calibration_batches
from netshrink.calibration.hessian import LayerInputs, solvable_layers
from netshrink.calibration.layerwise import layerwise
from netshrink.core.errors import ConfigError
from netshrink.core.model_io import call_model
from tests.models import HF_MODELS, TINY_MODELS, sample_inputs


class _Stacked(nn.Module):
    """A Linear before a list of blocks and one after it."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(6, 8)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(8, 8), nn.Tanh()) for _ in range(3))
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


BLOCKS = {"llama": "model.layers", "bert": "bert.encoder.layer", "convnet": "features", "lenet5": "",
          "stacked": "blocks"}


def _build(name: str) -> nn.Module:
    if name in HF_MODELS:
        pytest.importorskip("transformers")
    torch.manual_seed(0)
    return {**HF_MODELS, **TINY_MODELS, "stacked": _Stacked}[name]().eval()


def _full_pass(model: nn.Module, names: list[str], batches) -> dict[str, torch.Tensor]:
    stats = {name: LayerInputs(model.get_submodule(name)) for name in names}
    handles = [model.get_submodule(n).register_forward_pre_hook(lambda m, a, n=n: stats[n].add(a[0])) for n in names]
    with torch.no_grad():
        for batch in batches:
            call_model(model, batch)
    for handle in handles:
        handle.remove()
    return {name: s.hessian for name, s in stats.items()}


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_each_group_sees_the_inputs_of_the_model_changed_so_far(name):
    model = _build(name)
    reference = copy.deepcopy(model)
    data = torch.randn(6, 6) if name == "stacked" else sample_inputs(name, 6, seed=1)
    batches = calibration_batches(data, batch_size=4)
    stages = []

    def halve(stats):
        stages.append({n: s.hessian.clone() for n, s in stats.items()})
        with torch.no_grad():
            for n in stats:
                model.get_submodule(n).weight.mul_(0.5)

    assert layerwise(model, solvable_layers(model), batches, halve) == BLOCKS[name]
    assert sum(len(s) for s in stages) == len(solvable_layers(model))
    assert len(stages) > 1 or BLOCKS[name] == ""
    for stage in stages:
        expected = _full_pass(reference, list(stage), batches)
        for n, hessian in stage.items():
            assert torch.allclose(hessian, expected[n], rtol=1e-4, atol=1e-6), n
        with torch.no_grad():
            for n in stage:
                reference.get_submodule(n).weight.mul_(0.5)


class _Parallel(nn.Module):
    """A ModuleList of heads applied side by side (not one after the other), and an unused layer."""

    def __init__(self) -> None:
        super().__init__()
        self.heads = nn.ModuleList([nn.Linear(4, 3), nn.Linear(4, 3)])
        self.spare = nn.Linear(4, 4)

    def forward(self, x):
        return self.heads[0](x) + self.heads[1](x)


def test_a_list_of_parallel_modules_runs_as_one_block_and_an_unused_layer_is_one_line():
    model = _Parallel()
    batches = calibration_batches(torch.randn(8, 4))
    seen = []
    assert layerwise(model, solvable_layers(model, ("heads.0", "heads.1")), batches, seen.append) == ""
    assert set(seen[0]) == {"heads.0", "heads.1"}
    with pytest.raises(ConfigError, match="'spare' of _Parallel never ran") as info:
        layerwise(model, solvable_layers(model), batches, seen.append)
    assert "\n" not in str(info.value)


def test_the_model_is_left_in_its_mode_with_its_cache_setting():
    model = _build("llama").train()
    model.config.use_cache = True
    layerwise(model, solvable_layers(model), calibration_batches(sample_inputs("llama", 2)), lambda stats: None)
    assert model.training and model.config.use_cache is True


@pytest.mark.parametrize("name", ["bert", "llama"])
def test_a_block_s_layers_are_solved_in_running_order_those_reading_one_input_together(name):
    model = _build(name)
    stages = []
    layerwise(model, solvable_layers(model), calibration_batches(sample_inputs(name, 4, seed=1), batch_size=4),
              lambda stats: stages.append(sorted(n.rsplit(".", 1)[-1] for n in stats)))
    first_block = {"bert": [["key", "query", "value"], ["dense"], ["dense"], ["dense"]],
                   "llama": [["k_proj", "q_proj", "v_proj"], ["o_proj"], ["gate_proj", "up_proj"], ["down_proj"]]}
    assert stages[:4] == first_block[name]


@pytest.mark.parametrize("name", ["stacked", "bert", "lenet5"])
def test_with_a_reference_each_layer_pairs_its_inputs_with_the_original_model_s(name):
    model = _build(name)
    original = copy.deepcopy(model)
    data = torch.randn(6, 6) if name == "stacked" else sample_inputs(name, 6, seed=1)
    batches = calibration_batches(data, batch_size=4)
    seen = {}

    def halve(stats):
        for n, s in stats.items():
            seen[n] = None if s.cross is None else s.cross.clone()
            with torch.no_grad():
                model.get_submodule(n).weight.mul_(0.5)

    changed = copy.deepcopy(model)
    blocks = layerwise(model, solvable_layers(model), batches, halve, reference=True)
    assert set(seen) == set(solvable_layers(model))
    outside = {n for n, cross in seen.items() if cross is None}  # outside the blocks: no reference
    assert outside == {n for n in seen if blocks and not n.startswith(blocks + ".")}
    assert len(outside) < len(seen)
    for n, cross in seen.items():  # the changed model (layers before n halved) beside the original
        mine, theirs = [], []
        hooks = [changed.get_submodule(n).register_forward_pre_hook(lambda m, a, seen=mine: seen.append(a[0])),
                 original.get_submodule(n).register_forward_pre_hook(lambda m, a, seen=theirs: seen.append(a[0]))]
        with torch.no_grad():
            for batch in batches:
                call_model(changed, batch)
                call_model(original, batch)
        for hook in hooks:
            hook.remove()
        expected = LayerInputs(changed.get_submodule(n))
        for x, x_ref in zip(mine, theirs, strict=True):
            expected.add(x, x_ref)
        if cross is not None:
            assert torch.allclose(cross, expected.cross, rtol=1e-4, atol=1e-6), n
        with torch.no_grad():
            changed.get_submodule(n).weight.mul_(0.5)


class _Routed(nn.Module):
    """A layer chosen by the data (as a mixture of experts routes tokens)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate, self.left, self.right = nn.Linear(4, 4), nn.Linear(4, 2), nn.Linear(4, 2)

    def forward(self, x):
        h = self.gate(x)
        return self.left(h) if h.sum() > 0 else self.right(h)


def test_with_a_reference_layers_that_run_on_different_batches_are_one_line():
    model = _Routed()
    batches = [torch.ones(2, 4), -torch.ones(2, 4)]
    with torch.no_grad():
        model.gate.weight.copy_(torch.eye(4))
        model.gate.bias.zero_()

    def flip(stats):  # the changed gate sends each batch the other way
        with torch.no_grad():
            for n in stats:
                if n == "gate":
                    model.gate.weight.neg_()

    with pytest.raises(ConfigError, match="'left' ran more often in the original model .* calibration batch 0") as info:
        layerwise(model, solvable_layers(model), batches, flip, reference=True)
    assert "\n" not in str(info.value)
