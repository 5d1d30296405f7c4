"""Channel dependency groups of a model, found by tracing it with ``torch.fx``.

Removing output channel ``c`` of a Conv (or neuron ``c`` of a Linear) must also remove input
channel ``c`` of every layer that reads it, channel ``c`` of the BatchNorms and depthwise convs on
the way, and channel ``c`` of every producer tied to it by a residual add (after Torch-Pruning's
dependency graph, Fang et al. 2023, sec. 3). A *group* collects all of them: its ``entries`` say
which dimension of which module each channel index lives in. Concats place groups side by side
(``offset``); a flatten after a conv gives each channel ``spread`` consecutive Linear inputs.

What each layer or function does with channels is its rule in ``channel_rules.py``, a registry a
user can add to. Anything without a rule (a tensor reaching the output, an unknown module or
function, a parameter added to the channels) makes the groups it touches unprunable: the analysis
is conservative, never wrong; so are the groups of a layer called twice (shared weights).
"""

from __future__ import annotations

import collections

from torch import fx, nn

from netshrink.core.errors import ConfigError, one_line
from netshrink.prune.channel_rules import module_rule, rule_for
from netshrink.prune.channels import UNTRACKED, ChannelPass, Entry, Flow, Group

__all__ = ["Entry", "Group", "channel_groups", "trace"]


class _NamingTracer(fx.Tracer):
    """A tracer that remembers which module it is inside, to name the layer that fails; a module
    with a registered channel rule is a leaf."""

    def __init__(self) -> None:
        super().__init__()
        self.inside: list[str] = []

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return super().is_leaf_module(m, module_qualified_name) or module_rule(m) is not None

    def call_module(self, m, forward, args, kwargs):  # noqa: ANN001, ANN201 (fx's signature)
        self.inside.append(self.path_of_module(m))
        result = super().call_module(m, forward, args, kwargs)
        self.inside.pop()
        return result


def trace(model: nn.Module) -> fx.Graph:
    """The model's fx graph (torch.nn layers and layers with a channel rule are leaves); a model
    fx cannot trace is a one-line ConfigError naming the layer whose forward failed."""
    tracer = _NamingTracer()
    try:
        return tracer.trace(model)
    except Exception as error:  # noqa: BLE001 (fx raises many types)
        where = tracer.inside[-1] if tracer.inside else ""
        layer = f"layer {where!r} ({type(model.get_submodule(where)).__name__})" if where else \
            f"{type(model).__name__}.forward"
        raise ConfigError(f"structured pruning cannot trace {layer} with torch.fx ({one_line(error, 120)}); "
                          "remove data-dependent control flow there or prune that layer by magnitude") from None


def channel_groups(model: nn.Module) -> list[Group]:
    """Every channel group of ``model`` (prunable or not), in graph order."""
    graph = trace(model)
    modules = dict(model.named_modules())
    state = ChannelPass()
    for node in graph.nodes:
        state.reason = _blocked_by(node)
        state.flows[node] = _step(state, node, modules)
    groups = state.groups.roots()
    _block_shared_layers(graph, groups)
    return groups


def _step(state: ChannelPass, node: fx.Node, modules: dict[str, nn.Module]) -> Flow:
    """Apply ``node``'s rule; a node without one blocks what it reads."""
    if node.op in ("placeholder", "get_attr"):
        return UNTRACKED
    if node.op == "output":
        state.block_inputs(node)
        return UNTRACKED
    target = modules[node.target] if node.op == "call_module" else node.target
    rule = rule_for(node, target)
    if rule is None:
        state.block_inputs(node)
        return UNTRACKED
    return rule(state, node, target)


def _blocked_by(node: fx.Node) -> str:
    """Why ``node`` blocks the channels it cannot follow, in the user's terms (the innermost layer
    it belongs to, or its function)."""
    if node.op == "output":
        return "they reach the model's output"
    stack = node.meta.get("nn_module_stack")
    if stack:
        path, cls = list(stack.values())[-1]
        where = f"layer {path!r} ({getattr(cls, '__name__', cls)})"
    elif node.op == "call_method":
        where = f"Tensor.{node.target}"
    else:
        where = f"{getattr(node.target, '__module__', '')}.{getattr(node.target, '__name__', node.target)}"
    return (f"structured pruning does not follow them through {where}; "
            "netshrink.prune.register_channel_rule adds a rule for it")


def _block_shared_layers(graph: fx.Graph, groups: list[Group]) -> None:
    """A layer called twice (shared weights) would need both calls' channels cut alike, so its
    groups stay (an encoder layer's linear1 / linear2 are called through the encoder layer's node)."""
    calls = collections.Counter(node.target for node in graph.nodes if node.op == "call_module")
    for group in groups:
        for entry in group.entries:
            for name in (entry.module, entry.module.rpartition(".")[0]):
                if calls[name] > 1:
                    group.block(f"layer {name!r} is called more than once (its weights are shared)")
