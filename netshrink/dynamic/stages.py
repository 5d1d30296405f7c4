"""Cutting a model into stages at named blocks, so that later stages run on fewer samples.

Early exits need the network as ``stage_0, stage_1, ..., stage_E`` where ``stage_k`` maps the output
of block ``k - 1`` to the output of block ``k`` (the last stage ends at the model's output): then
samples that left at an exit can be dropped from the batch before the next stage really runs.
The model is traced with ``torch.fx`` (the named blocks kept as leaf calls) and its graph cut right
after each block's call. A cut is valid only when nothing but that block's output crosses it
(parameters read with ``get_attr`` are copied to the stage that needs them).

Supported: models torch.fx can trace, with one tensor input, whose exit blocks are each called once,
in forward order, and whose output alone carries on (e.g. any block of a sequential chain, or the
input of a residual block). Refused, in one line: untraceable forwards (data-dependent control
flow), a value other than the block's output crossing the cut (a residual connection spanning
it), blocks called twice or never, several inputs.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import torch
from torch import fx, nn

from netshrink.core.errors import ConfigError, one_line


class _BlockTracer(fx.Tracer):
    """The default tracer, but with the exit blocks kept as single ``call_module`` nodes."""

    def __init__(self, blocks: Sequence[str]) -> None:
        super().__init__()
        self.blocks = set(blocks)

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return qualified_name in self.blocks or super().is_leaf_module(module, qualified_name)


def split_stages(model: nn.Module, blocks: Sequence[str]) -> list[fx.GraphModule]:
    """``len(blocks) + 1`` GraphModules sharing ``model``'s submodules (no copies of weights):
    stage 0 takes the model's input, stage ``k`` takes block ``k - 1``'s output, the last returns
    the model's output. Raises a one-line ConfigError when the model cannot be cut there."""
    name = type(model).__name__
    try:
        graph = _BlockTracer(blocks).trace(model)
    except Exception as error:  # noqa: BLE001 (any tracing failure is the same refusal)
        raise ConfigError(f"torch.fx cannot trace {name} ({one_line(error, 120)}); early exits need a "
                          "traceable forward (no data-dependent control flow)") from None
    nodes = list(graph.nodes)
    placeholders = [node for node in nodes if node.op == "placeholder"]
    if len(placeholders) != 1:
        raise ConfigError(f"{name}.forward takes {len(placeholders)} inputs; early exits need exactly one tensor")
    position: dict[str, int] = {}
    for index, node in enumerate(nodes):
        if node.op == "call_module" and node.target in blocks:
            if node.target in position:
                raise ConfigError(f"block {node.target!r} is called twice in {name}.forward; put the exit "
                                  "after a block called once")
            position[node.target] = index
    for block in blocks:
        if block not in position:
            raise ConfigError(f"block {block!r} is never called in {name}.forward; exit after a block the "
                              "forward pass runs")
    cuts = [position[block] for block in blocks]
    if cuts != sorted(cuts):
        ordered = sorted(blocks, key=position.__getitem__)
        raise ConfigError(f"exits must be listed in forward order: {ordered}, not {list(blocks)}")
    bounds = [-1, *cuts, len(nodes) - 1]
    stages = []
    for k in range(len(bounds) - 1):
        entry = nodes[bounds[k]] if k else None
        stage = fx.Graph()
        env: dict[fx.Node, fx.Node] = {}
        if entry is not None:
            env[entry] = stage.placeholder("features")
        for node in nodes[bounds[k] + 1: bounds[k + 1] + 1]:
            for used in node.all_input_nodes:
                if used in env:
                    continue
                if used.op != "get_attr":
                    raise ConfigError(
                        f"cannot exit after {blocks[k - 1]!r}: {used.name!r} (computed before it) is used after "
                        "it, e.g. by a residual connection; exit after a block whose output alone carries on")
                env[used] = stage.node_copy(used)
            env[node] = stage.node_copy(node, env.__getitem__)
        if k < len(bounds) - 2:
            stage.output(env[nodes[bounds[k + 1]]])
        stages.append(fx.GraphModule(model, stage, class_name=f"{name}Stage{k}"))
    return stages


_CACHE: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[str, ...], list[fx.GraphModule]]] = \
    weakref.WeakKeyDictionary()


def cached_stages(model: nn.Module, blocks: Sequence[str]) -> list[fx.GraphModule]:
    """``split_stages`` traced once per model object (a copy of the model traces its own; the
    stages share the model's modules, so training and ``load_state_dict`` reach them)."""
    key = tuple(blocks)
    hit = _CACHE.get(model)
    if hit is None or hit[0] != key:
        hit = (key, split_stages(model, key))
        _CACHE[model] = hit
    return hit[1]


def batch_first_shapes(stages: Sequence[fx.GraphModule], input_shape: Sequence[int],
                       device: torch.device) -> list[tuple[int, ...]]:
    """Per-sample shape of each stage's output but the last (probed on a batch of 3, in eval mode);
    refuses a cut whose output does not keep the batch in dimension 0 (it could not be cut by sample)."""
    shapes = []
    with torch.no_grad():
        x = torch.zeros(3, *input_shape, device=device)
        for k, stage in enumerate(stages[:-1]):
            x = stage(x)
            if not isinstance(x, torch.Tensor) or x.dim() < 2 or x.shape[0] != 3:
                got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                raise ConfigError(f"exit {k}'s block gives {got} for a batch of 3; exits need a tensor output "
                                  "with the batch in dimension 0")
            shapes.append(tuple(x.shape[1:]))
    return shapes
