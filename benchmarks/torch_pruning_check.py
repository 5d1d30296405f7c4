"""Torch-Pruning as the engine of structured pruning? Its dependency graph on our structured cases.

    pip install --no-deps --target /tmp/tp torch-pruning   # it needs only torch and numpy
    PYTHONPATH=/tmp/tp python benchmarks/torch_pruning_check.py

Per model (the tiny models of the tests, the structured tests' own cases and the zoo's mobile
nets at 8x8): the groups ours can prune; for Torch-Pruning's ``DependencyGraph``, how many groups
keep the defining property (zero half of a group's channels where they are produced, remove exactly
those: outputs unchanged), whether its ``MetaPruner`` at 0.5 (output layer ignored) leaves a model
that runs, and whether its graph builds on the meta device (our rebuild runs there). The verdict
is in docs/design.md, "Structured pruning: why our own rules".
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from netshrink.core.errors import ConfigError  # noqa: E402
from netshrink.models import create  # noqa: E402
from netshrink.prune.dependency import channel_groups  # noqa: E402
from tests.models import TINY_MODELS  # noqa: E402
from tests.prune.test_structured import Branches, SharedLayer, Untraceable  # noqa: E402

X = torch.randn(2, 1, 8, 8)
CASES = {**TINY_MODELS, "concat": Branches, "shared_layer": SharedLayer, "data_dependent": Untraceable,
         **{name: (lambda name=name: create(name, input_shape=(1, 8, 8)))
            for name in ("mobilenet_tiny", "ghostnet_tiny", "shufflenet_tiny")}}


def _ours(model: nn.Module) -> str:
    try:
        return str(sum(g.prunable for g in channel_groups(model)))
    except ConfigError:
        return "refused (fx)"


def _head(model: nn.Module) -> nn.Module:
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


def _roots(tp, model: nn.Module):
    """Torch-Pruning's graph of ``model`` and the root (dependency, size) of each of its groups."""
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=X, verbose=False)
    return graph, [(g[0].dep, len(g[0].idxs)) for g in graph.get_all_groups(root_module_types=[nn.Conv2d, nn.Linear])]


@torch.no_grad()
def _kill(tp, group) -> None:
    """Zero the group's channels where they are produced (Linear / Conv rows, BatchNorm affine)."""
    for dep, idxs in group:
        module = dep.target.module
        if dep.handler.__name__ == "prune_out_channels" and isinstance(module, (nn.Linear, nn.Conv2d, nn.BatchNorm2d)):
            plain = tp._helpers.to_plain_idxs(idxs)
            module.weight[plain] = 0
            if module.bias is not None:
                module.bias[plain] = 0


def _dead_channels_kept(tp, make) -> str:
    """Groups (the output layer's aside) whose dead channels Torch-Pruning removes without changing
    the outputs, of all such groups."""
    exact = total = 0
    for index in range(len(_roots(tp, make().eval())[1])):
        torch.manual_seed(0)
        model = make().eval()
        graph, roots = _roots(tp, model)
        root, size = roots[index]
        if root.target.module is _head(model):
            continue
        total += 1
        group = graph.get_pruning_group(root.target.module, root.handler, list(range(0, size, 2)))
        _kill(tp, group)
        with torch.no_grad():
            before = model(X)
            try:
                group.prune()
                exact += torch.allclose(model(X), before, atol=1e-5)
            except RuntimeError:  # a model the cut broke
                pass
    return f"{exact}/{total}"


def _pruner(tp, make) -> str:
    torch.manual_seed(0)
    model = make().eval()
    tp.pruner.MetaPruner(model, X, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=0.5,
                         ignored_layers=[_head(model)]).step()
    try:
        with torch.no_grad():
            model(X)
        return "runs"
    except RuntimeError as error:
        return f"broken ({str(error)[:40]})"


def _meta(tp, make) -> str:
    try:
        tp.DependencyGraph().build_dependency(make().to("meta"), example_inputs=X.to("meta"), verbose=False)
        return "ok"
    except RuntimeError:
        return "fails"


def main() -> None:
    import torch_pruning as tp

    warnings.filterwarnings("ignore", message="Unwrapped parameters")
    print("| model | ours: prunable groups | TP: dead channels removed exactly | TP pruner 0.5 | TP graph on meta |")
    print("| --- | --- | --- | --- | --- |")
    for name, make in CASES.items():
        torch.manual_seed(0)
        print(f"| {name} | {_ours(make())} | {_dead_channels_kept(tp, make)} | {_pruner(tp, make)} | "
              f"{_meta(tp, make)} |")


if __name__ == "__main__":
    main()
