"""Per-layer channel rules of structured pruning, in a registry keyed by module type or function
(as Torch-Pruning's pruners are, Fang et al. 2023, sec. 3.2), so a user can add one for a layer
of their own.

A rule is ``rule(state, node, target) -> Flow``: given the ``ChannelPass`` ``state``, an fx
``node`` and its ``target`` (the module of a ``call_module`` node, else the function or method
name), it records what the node does with the channels it reads and returns what it hands on.
A module that holds per-channel tensors also needs ``resize(module, keep)``, which keeps only the
``keep[role]`` indices along ``"out"``, ``"in"`` or ``"channel"``. A module class's rule covers
its subclasses that keep its ``forward``; Tensor methods are keyed by ``torch.Tensor.<name>``. A
node without a rule blocks the channels it touches.

Example, a per-channel scale of the user's own (the built-in rules below are registered alike)::

    def scale_rule(state, node, module):
        first = state.input(node)
        return Flow(state.members(first.layout, node.target, conv_map=True), first.ndim)

    def scale_resize(module, keep):
        index_select_(module, "weight", 0, keep["channel"])

    register_channel_rule(ChannelScale, scale_rule, resize=scale_resize)
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from netshrink.core.errors import ConfigError
from netshrink.prune.channels import UNTRACKED, ChannelPass, Flow, Layout

Rule = Callable[[ChannelPass, fx.Node, Any], Flow]
Resize = Callable[[nn.Module, dict[str, torch.Tensor]], None]


@dataclasses.dataclass(frozen=True)
class _ModuleRule:
    rule: Rule
    resize: Resize | None


_MODULE_RULES: dict[type, _ModuleRule] = {}
_FUNCTION_RULES: dict[Callable, Rule] = {}


def register_channel_rule(key: type[nn.Module] | Callable, rule: Rule, resize: Resize | None = None) -> None:
    """Use ``rule`` for every module of class ``key`` (and its subclasses that keep its forward) or
    every call of function ``key`` (a Tensor method as ``torch.Tensor.<name>``); ``resize`` cuts a
    module's tensors. A later registration of the same key replaces the earlier one. A module
    class with a rule is a leaf of the trace: its forward is not looked into."""
    if isinstance(key, type) and issubclass(key, nn.Module):
        _MODULE_RULES[key] = _ModuleRule(rule, resize)
    elif callable(key) and not isinstance(key, type) and resize is None:
        _FUNCTION_RULES[key] = rule
    else:
        raise ConfigError(f"register_channel_rule takes an nn.Module subclass (with an optional resize) or a "
                          f"function, not {key!r}")


def module_rule(module: nn.Module) -> _ModuleRule | None:
    """The rule registered for ``module``'s class or the nearest base class whose ``forward`` it
    keeps (a subclass with a forward of its own, such as a slimmable Linear, has none of its own)."""
    for cls in type(module).__mro__:
        if cls in _MODULE_RULES:
            return _MODULE_RULES[cls]
        if "forward" in vars(cls):
            return None
    return None


def rule_for(node: fx.Node, target: Any) -> Rule | None:
    """The rule of a ``call_module`` (``target`` its module), ``call_function`` or ``call_method`` node."""
    if node.op == "call_module":
        found = module_rule(target)
        return found.rule if found is not None else None
    key = getattr(torch.Tensor, target, None) if node.op == "call_method" else target
    try:
        return _FUNCTION_RULES.get(key)
    except TypeError:  # an unhashable callable
        return None


# --- rules ---------------------------------------------------------------------------------------

def passthrough(state: ChannelPass, node: fx.Node, target: Any) -> Flow:
    """Elementwise on one tensor (activation, dropout, identity): its channels pass unchanged;
    another tensor argument is not followed."""
    state.block_inputs(node, start=1)
    return state.input(node)


def untracked(state: ChannelPass, node: fx.Node, target: Any) -> Flow:
    """Reads only the shape (``size``, ``dim``): nothing to follow, nothing blocked."""
    return UNTRACKED


def linear(state: ChannelPass, node: fx.Node, module: nn.Linear) -> Flow:
    """Consumes the last axis, produces ``out_features`` new channels there."""
    first = state.input(node)
    if first.layout is not None and not (first.layout.axis == -1 or first.layout.ndim == 2):
        state.block(first.layout)  # a Linear reads the last axis, not the channels of a map
    else:
        state.consume(first.layout, node.target, module.in_features)
    return Flow(state.produce(node.target, module.out_features, -1, first.ndim), first.ndim)


def conv(state: ChannelPass, node: fx.Node, module: nn.Module) -> Flow:
    """A dense conv consumes axis 1 and produces ``out_channels``; a depthwise one holds a filter
    per channel; other grouped convs are not followed (hand-written rules stop there)."""
    if module.groups > 1 and module.groups == module.in_channels == module.out_channels:
        return Flow(state.members(state.input(node).layout, node.target, conv_map=True), module.weight.dim())
    if module.groups > 1:
        state.block_inputs(node)
        return UNTRACKED
    first = state.input(node)
    if first.layout is not None and (first.layout.axis != 1 or first.layout.flat):
        state.block(first.layout)
    else:
        state.consume(first.layout, node.target, module.in_channels)
    ndim = module.weight.dim()
    return Flow(state.produce(node.target, module.out_channels, 1, ndim), ndim)


def batchnorm(state: ChannelPass, node: fx.Node, module: nn.Module) -> Flow:
    """Per-channel statistics and affine: channels pass through."""
    first = state.input(node)
    return Flow(state.members(first.layout, node.target, conv_map=False), first.ndim)


def pool(state: ChannelPass, node: fx.Node, target: Any) -> Flow:
    """Spatial pooling (and channel dropout) keeps a conv map's channels."""
    first = state.input(node)
    return Flow(state.pooled(first.layout), first.ndim)


def _flatten(state: ChannelPass, first: Flow, start: int, end: int) -> Flow:
    """Flattening a conv map (B, C, H, W) from dim 1 keeps channels contiguous (C-major)."""
    layout, ndim = first.layout, first.ndim
    if layout is None:
        return Flow(None, 2 if start == 1 and end == -1 else None)
    if start == 1 and end == -1 and layout.axis == 1 and ndim is not None:
        return Flow(Layout(layout.segments, 1, 2, flat=ndim > 2 or layout.flat), 2)
    state.block(layout)
    return UNTRACKED


def flatten_module(state: ChannelPass, node: fx.Node, module: nn.Flatten) -> Flow:
    return _flatten(state, state.input(node), module.start_dim, module.end_dim)


def flatten(state: ChannelPass, node: fx.Node, target: Any) -> Flow:
    """``torch.flatten(x, start, end)`` or ``x.flatten(start, end)``."""
    start = node.kwargs.get("start_dim", node.args[1] if len(node.args) > 1 else 0)
    end = node.kwargs.get("end_dim", node.args[2] if len(node.args) > 2 else -1)
    return _flatten(state, state.input(node), start, end)


def view(state: ChannelPass, node: fx.Node, target: Any) -> Flow:
    """``x.view(B, -1)`` / ``x.reshape(B, -1)`` is a flatten from dim 1; other shapes are not followed."""
    if len(node.args) == 3 and node.args[2] == -1:
        return _flatten(state, state.input(node), 1, -1)
    state.block_inputs(node)
    return UNTRACKED


def _dims(node: fx.Node) -> tuple[int, ...] | None:
    dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
    if isinstance(dim, int):
        return (dim,)
    if isinstance(dim, (tuple, list)) and all(isinstance(d, int) for d in dim):
        return tuple(dim)
    return None


def reduce(state: ChannelPass, node: fx.Node, target: Any) -> Flow:
    """A mean / sum / max over spatial dims of a conv map keeps its channels."""
    first, dims = state.input(node), _dims(node)
    layout, ndim = first.layout, first.ndim
    if layout is None:
        return UNTRACKED
    reduced = {d % ndim for d in dims} if dims is not None and ndim is not None else {0}
    if layout.axis != 1 or layout.flat or reduced & {0, 1}:  # over the batch or the channels
        state.block(layout)
        return UNTRACKED
    new_ndim = ndim if node.kwargs.get("keepdim", False) else ndim - len(reduced)
    return Flow(Layout(layout.segments, 1, new_ndim), new_ndim)


def binary(state: ChannelPass, node: fx.Node, target: Any) -> Flow:
    """An elementwise op of two channel tensors ties their groups (a residual add); with an
    untracked tensor (a parameter, a constant map) it is not followed."""
    flows = [state.flows.get(a, UNTRACKED) for a in node.all_input_nodes]
    ndim = next((f.ndim for f in flows if f.ndim is not None), None)
    tensors = [f.layout for f in flows if f.layout is not None]
    if not tensors:
        return Flow(None, ndim)
    base = tensors[0]
    tied = len(tensors) == len(flows) and all(_tie(state, base, other) for other in tensors[1:])
    if not tied:
        for layout in tensors:
            state.block(layout)
        return Flow(None, ndim)
    return Flow(base, ndim)


def _tie(state: ChannelPass, base: Layout, other: Layout) -> bool:
    same = len(other.segments) == len(base.segments) and other.axis == base.axis and other.flat == base.flat
    return same and all(state.groups.union(a, b) for a, b in zip(base.segments, other.segments, strict=True))


def concat(state: ChannelPass, node: fx.Node, target: Any) -> Flow:
    """``torch.cat`` along the channel axis puts the groups side by side."""
    parts = node.args[0] if node.args else node.kwargs.get("tensors")
    dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
    found = [state.flows.get(p, UNTRACKED).layout if isinstance(p, fx.Node) else None for p in (parts or [])]
    ok = bool(found) and all(f is not None for f in found) and len({(f.axis, f.flat, f.ndim) for f in found}) == 1
    if ok and dim == found[0].axis:
        layout = Layout(tuple(i for f in found for i in f.segments), found[0].axis, found[0].ndim)
        return Flow(layout, state.input(node).ndim)
    for layout in found:
        state.block(layout)
    return Flow(None, state.input(node).ndim)


def transformer_encoder_layer(state: ChannelPass, node: fx.Node, module: nn.TransformerEncoderLayer) -> Flow:
    """A leaf whose MLP hidden units (``linear1`` outputs = ``linear2`` inputs) form a group of
    their own; ``d_model`` is not followed through attention and LayerNorm."""
    hidden = state.produce(f"{node.target}.linear1", module.linear1.out_features, -1, None)
    state.consume(hidden, f"{node.target}.linear2", module.linear2.in_features)
    first = state.input(node)
    state.block(first.layout)
    return Flow(None, first.ndim)


# --- resizers ------------------------------------------------------------------------------------

def index_select_(module: nn.Module, name: str, dim: int, keep: torch.Tensor) -> None:
    """Keep only the ``keep`` indices of ``module.<name>`` along ``dim`` (a Parameter stays one,
    with its ``requires_grad``; a missing tensor, such as ``bias=False``, is skipped)."""
    tensor = getattr(module, name)
    if tensor is None:
        return
    data = tensor.detach().index_select(dim, keep.to(tensor.device))
    if isinstance(tensor, nn.Parameter):
        setattr(module, name, nn.Parameter(data, requires_grad=tensor.requires_grad))
    else:
        setattr(module, name, data)


def resize_linear(module: nn.Linear, keep: dict[str, torch.Tensor]) -> None:
    if "out" in keep:
        index_select_(module, "weight", 0, keep["out"])
        index_select_(module, "bias", 0, keep["out"])
        module.out_features = len(keep["out"])
    if "in" in keep:
        index_select_(module, "weight", 1, keep["in"])
        module.in_features = len(keep["in"])


def resize_conv(module: nn.Module, keep: dict[str, torch.Tensor]) -> None:
    if "channel" in keep:  # depthwise: channel c in = channel c out
        keep = {"out": keep["channel"]}
        module.in_channels = module.groups = len(keep["out"])
    if "out" in keep:
        index_select_(module, "weight", 0, keep["out"])
        index_select_(module, "bias", 0, keep["out"])
        module.out_channels = len(keep["out"])
    if "in" in keep:
        index_select_(module, "weight", 1, keep["in"])
        module.in_channels = len(keep["in"])


def resize_batchnorm(module: nn.Module, keep: dict[str, torch.Tensor]) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        index_select_(module, name, 0, keep["channel"])
    module.num_features = len(keep["channel"])


# --- the built-in registrations --------------------------------------------------------------------

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
ELEMENTWISE_MODULES = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.LeakyReLU, nn.ELU,
                       nn.Hardswish, nn.Hardsigmoid, nn.Mish, nn.Dropout, nn.Identity)
POOL_MODULES = (nn.Dropout1d, nn.Dropout2d, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d,
                nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_BUILTIN_FUNCTIONS: dict[Rule, tuple[Callable, ...]] = {
    passthrough: (torch.relu, torch.relu_, F.relu, F.relu6, F.gelu, F.silu, torch.sigmoid, torch.tanh, F.leaky_relu,
                  F.hardswish, F.dropout, F.sigmoid, F.tanh, Tensor.relu, Tensor.relu_, Tensor.sigmoid,
                  Tensor.tanh, Tensor.contiguous, Tensor.clone),
    pool: (F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.max_pool1d, F.avg_pool1d),
    binary: (operator.add, operator.iadd, operator.sub, operator.mul, operator.imul, torch.add, torch.sub, torch.mul,
             Tensor.add, Tensor.add_, Tensor.sub, Tensor.mul, Tensor.mul_),
    reduce: (torch.mean, torch.sum, torch.amax, Tensor.mean, Tensor.sum, Tensor.amax),
    flatten: (torch.flatten, Tensor.flatten),
    view: (Tensor.view, Tensor.reshape),
    concat: (torch.cat,),
    untracked: (Tensor.size, Tensor.dim),
}

register_channel_rule(nn.Linear, linear, resize=resize_linear)
for _cls in CONVS:
    register_channel_rule(_cls, conv, resize=resize_conv)
for _cls in NORMS:
    register_channel_rule(_cls, batchnorm, resize=resize_batchnorm)
for _cls in ELEMENTWISE_MODULES:
    register_channel_rule(_cls, passthrough)
for _cls in POOL_MODULES:
    register_channel_rule(_cls, pool)
register_channel_rule(nn.Flatten, flatten_module)
register_channel_rule(nn.TransformerEncoderLayer, transformer_encoder_layer)
for _rule, _functions in _BUILTIN_FUNCTIONS.items():
    for _function in _functions:
        register_channel_rule(_function, _rule)
