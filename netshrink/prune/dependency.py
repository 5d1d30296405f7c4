"""Channel dependency groups of a model, found by tracing it with ``torch.fx``.

Removing output channel ``c`` of a Conv (or neuron ``c`` of a Linear) must also remove input
channel ``c`` of every layer that reads it, channel ``c`` of the BatchNorms and depthwise convs on
the way, and channel ``c`` of every producer tied to it by a residual add (after Torch-Pruning's
dependency graph, Fang et al. 2023, sec. 3). A *group* collects all of them: its ``entries`` say
which dimension of which module each channel index lives in. Concats place groups side by side
(``offset``); a flatten after a conv gives each channel ``spread`` consecutive Linear inputs.

Anything the tracer does not understand (a tensor reaching the output, an unknown module or
function, a parameter added to the channels) makes the groups it touches unprunable: the analysis
is conservative, never wrong; so are the groups of a layer called twice (shared weights).
``nn.TransformerEncoderLayer`` is a leaf whose MLP hidden units
(``linear1`` outputs = ``linear2`` inputs) form a group of their own.
"""

from __future__ import annotations

import collections
import dataclasses
import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

from netshrink.core.errors import ConfigError, one_line

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
ELEMENTWISE_MODULES = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.LeakyReLU, nn.ELU,
                       nn.Hardswish, nn.Hardsigmoid, nn.Mish, nn.Dropout, nn.Identity)
POOL_MODULES = (nn.Dropout1d, nn.Dropout2d, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d,
                nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
PASS_FUNCTIONS = {torch.relu, torch.relu_, F.relu, F.relu6, F.gelu, F.silu, torch.sigmoid, torch.tanh, F.leaky_relu,
                  F.hardswish, F.dropout, F.sigmoid, F.tanh}
POOL_FUNCTIONS = {F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.max_pool1d, F.avg_pool1d}
PASS_METHODS = {"relu", "relu_", "sigmoid", "tanh", "contiguous", "clone"}
BINARY = {operator.add, operator.iadd, operator.sub, operator.mul, operator.imul, torch.add, torch.sub, torch.mul}
BINARY_METHODS = {"add", "add_", "sub", "mul", "mul_"}
REDUCE = {torch.mean, torch.sum, torch.amax}
REDUCE_METHODS = {"mean", "sum", "amax"}
SHAPE_METHODS = {"size", "dim"}


@dataclasses.dataclass(frozen=True)
class Entry:
    """Channel ``c`` of a group is index ``(offset + c) * spread + j`` (``j < spread``) along the
    ``role`` dimension of ``module``: ``"out"`` (rows of a weight, bias), ``"in"`` (weight columns)
    or ``"channel"`` (every per-channel tensor of a BatchNorm or depthwise conv)."""

    module: str
    role: str
    offset: int = 0
    spread: int = 1


@dataclasses.dataclass
class Group:
    """Channels that must be removed together."""

    size: int
    entries: list[Entry] = dataclasses.field(default_factory=list)
    prunable: bool = True

    @property
    def producers(self) -> list[str]:
        return [e.module for e in self.entries if e.role == "out"]


@dataclasses.dataclass(frozen=True)
class Layout:
    """The channel axis of a traced tensor: groups side by side, ``axis`` 1 (conv, NC...) or -1
    (Linear, ...C), the tensor's ``ndim`` when known, and whether a conv map was flattened."""

    segments: tuple[int, ...]
    axis: int
    ndim: int | None
    flat: bool = False


class _Groups:
    """Union-find over groups: a residual add ties two groups into one."""

    def __init__(self) -> None:
        self.groups: list[Group] = []
        self.parent: list[int] = []

    def new(self, size: int) -> int:
        self.groups.append(Group(size))
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def add(self, i: int, entry: Entry) -> None:
        self.groups[self.find(i)].entries.append(entry)

    def block(self, layout: Layout | None) -> None:
        if layout is not None:
            for i in layout.segments:
                self.groups[self.find(i)].prunable = False

    def union(self, i: int, j: int) -> bool:
        a, b = self.find(i), self.find(j)
        if a == b:
            return True
        if self.groups[a].size != self.groups[b].size:
            return False
        self.groups[b].entries += self.groups[a].entries
        self.groups[b].prunable &= self.groups[a].prunable
        self.parent[a] = b
        return True

    def result(self) -> list[Group]:
        return [g for i, g in enumerate(self.groups) if self.find(i) == i]


class _NamingTracer(fx.Tracer):
    """A tracer that remembers which module it is inside, to name the layer that fails."""

    def __init__(self) -> None:
        super().__init__()
        self.inside: list[str] = []

    def call_module(self, m, forward, args, kwargs):  # noqa: ANN001, ANN201 (fx's signature)
        self.inside.append(self.path_of_module(m))
        result = super().call_module(m, forward, args, kwargs)
        self.inside.pop()
        return result


def trace(model: nn.Module) -> fx.Graph:
    """The model's fx graph (torch.nn layers are leaves); a model fx cannot trace is a one-line
    ConfigError naming the layer whose forward failed."""
    tracer = _NamingTracer()
    try:
        return tracer.trace(model)
    except Exception as error:  # noqa: BLE001 (fx raises many types)
        where = tracer.inside[-1] if tracer.inside else ""
        layer = f"layer {where!r} ({type(model.get_submodule(where)).__name__})" if where else \
            f"{type(model).__name__}.forward"
        raise ConfigError(f"structured pruning cannot trace {layer} with torch.fx ({one_line(error, 120)}); "
                          "remove data-dependent control flow there or prune that layer by magnitude") from None


def _is_depthwise(m: nn.Module) -> bool:
    return isinstance(m, CONVS) and m.groups == m.in_channels == m.out_channels and m.groups > 1


def _dims(node: fx.Node) -> tuple[int, ...] | None:
    dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
    if isinstance(dim, int):
        return (dim,)
    if isinstance(dim, (tuple, list)) and all(isinstance(d, int) for d in dim):
        return tuple(dim)
    return None


def channel_groups(model: nn.Module) -> list[Group]:
    """Every channel group of ``model`` (prunable or not), in graph order."""
    graph = trace(model)
    modules = dict(model.named_modules())
    groups = _Groups()
    layouts: dict[fx.Node, Layout | None] = {}
    ndims: dict[fx.Node, int | None] = {}

    def consume(layout: Layout | None, name: str, width: int) -> None:
        """Record ``name`` reading ``layout`` on its ``width`` inputs (block it when it cannot)."""
        if layout is None:
            return
        sizes = [groups.groups[groups.find(i)].size for i in layout.segments]
        total = sum(sizes)
        spread = width // total if width % total == 0 else 0
        if spread == 0 or (spread > 1 and not layout.flat):
            groups.block(layout)
            return
        offset = 0
        for i, size in zip(layout.segments, sizes, strict=True):
            groups.add(i, Entry(name, "in", offset, spread))
            offset += size

    def produce(name: str, size: int, axis: int, ndim: int | None) -> Layout:
        i = groups.new(size)
        groups.add(i, Entry(name, "out"))
        return Layout((i,), axis, ndim)

    def members(layout: Layout | None, name: str, conv_map: bool) -> Layout | None:
        """A BatchNorm or depthwise conv: per-channel tensors, channels pass through."""
        if layout is None:
            return None
        if layout.flat or not (layout.axis == 1 or (not conv_map and layout.ndim == 2)):
            groups.block(layout)
            return None
        offset = 0
        for i in layout.segments:
            groups.add(i, Entry(name, "channel", offset))
            offset += groups.groups[groups.find(i)].size
        return layout

    def pooled(layout: Layout | None) -> Layout | None:
        """Pooling keeps the channels of a conv map (and mixes the last axis of anything else)."""
        if layout is not None and (layout.axis != 1 or layout.flat):
            groups.block(layout)
            return None
        return layout

    for node in graph.nodes:
        inputs = node.all_input_nodes
        first = layouts.get(inputs[0]) if inputs else None
        first_ndim = ndims.get(inputs[0]) if inputs else None
        out: Layout | None = None
        ndim: int | None = first_ndim
        if node.op == "call_module":
            m = modules[node.target]
            if isinstance(m, nn.Linear):
                if first is not None and not (first.axis == -1 or first.ndim == 2):
                    groups.block(first)  # a Linear reads the last axis, not the channels
                else:
                    consume(first, node.target, m.in_features)
                out = produce(node.target, m.out_features, -1, first_ndim)
            elif _is_depthwise(m):
                out = members(first, node.target, conv_map=True)
                ndim = m.weight.dim()
            elif isinstance(m, CONVS) and m.groups == 1:
                if first is not None and (first.axis != 1 or first.flat):
                    groups.block(first)
                else:
                    consume(first, node.target, m.in_channels)
                ndim = m.weight.dim()
                out = produce(node.target, m.out_channels, 1, ndim)
            elif isinstance(m, NORMS):
                out = members(first, node.target, conv_map=False)
            elif isinstance(m, ELEMENTWISE_MODULES):
                out = first
            elif isinstance(m, POOL_MODULES):
                out = pooled(first)
            elif isinstance(m, nn.Flatten):
                out, ndim = _flatten(first, first_ndim, m.start_dim, m.end_dim, groups)
            elif isinstance(m, nn.TransformerEncoderLayer):
                hidden = produce(f"{node.target}.linear1", m.linear1.out_features, -1, None)
                consume(hidden, f"{node.target}.linear2", m.linear2.in_features)
                groups.block(first)
            else:
                for arg in inputs:
                    groups.block(layouts.get(arg))
                ndim = None
        elif node.op in ("call_function", "call_method"):
            target = node.target
            if node.op == "call_method" and target in SHAPE_METHODS:
                out, ndim = None, None
            elif target in PASS_FUNCTIONS or (node.op == "call_method" and target in PASS_METHODS):
                out = first
                for arg in inputs[1:]:
                    groups.block(layouts.get(arg))
            elif target in POOL_FUNCTIONS:
                out = pooled(first)
            elif target in BINARY or (node.op == "call_method" and target in BINARY_METHODS):
                out = _binary([layouts.get(a) for a in inputs], groups)
                ndim = next((ndims.get(a) for a in inputs if ndims.get(a) is not None), None)
            elif target is torch.flatten or target == "flatten":
                start = node.kwargs.get("start_dim", node.args[1] if len(node.args) > 1 else 0)
                end = node.kwargs.get("end_dim", node.args[2] if len(node.args) > 2 else -1)
                out, ndim = _flatten(first, first_ndim, start, end, groups)
            elif node.op == "call_method" and target in ("view", "reshape") and len(node.args) == 3 \
                    and node.args[2] == -1:
                out, ndim = _flatten(first, first_ndim, 1, -1, groups)
            elif target in REDUCE or (node.op == "call_method" and target in REDUCE_METHODS):
                out, ndim = _reduce(first, first_ndim, _dims(node), node.kwargs.get("keepdim", False), groups)
            elif target is torch.cat:
                out = _concat(node, layouts, groups)
            else:
                for arg in inputs:
                    groups.block(layouts.get(arg))
                ndim = None
        elif node.op == "output":
            for arg in inputs:
                groups.block(layouts.get(arg))
        else:  # placeholder, get_attr
            ndim = None
        layouts[node] = out
        ndims[node] = ndim
    calls = collections.Counter(node.target for node in graph.nodes if node.op == "call_module")
    result = groups.result()
    for group in result:  # a layer called twice (shared weights) would need both calls' channels cut alike
        # (an encoder layer's linear1/linear2 are called through the encoder layer's node)
        if any(calls[entry.module] > 1 or calls[entry.module.rpartition(".")[0]] > 1 for entry in group.entries):
            group.prunable = False
    return result


def _flatten(layout: Layout | None, ndim: int | None, start: int, end: int,
             groups: _Groups) -> tuple[Layout | None, int | None]:
    """Flattening a conv map (B, C, H, W) from dim 1 keeps channels contiguous (C-major)."""
    if layout is None:
        return None, 2 if start == 1 and end == -1 else None
    if start == 1 and end == -1 and layout.axis == 1 and ndim is not None:
        return Layout(layout.segments, 1, 2, flat=ndim > 2 or layout.flat), 2
    groups.block(layout)
    return None, None


def _reduce(layout: Layout | None, ndim: int | None, dims: tuple[int, ...] | None, keepdim: bool,
            groups: _Groups) -> tuple[Layout | None, int | None]:
    """A mean/sum over spatial dims of a conv map keeps its channels."""
    if layout is None:
        return None, None
    if dims is None or ndim is None or layout.axis != 1 or layout.flat:
        groups.block(layout)
        return None, None
    normal = {d % ndim for d in dims}
    if 0 in normal or 1 in normal:
        groups.block(layout)
        return None, None
    new_ndim = ndim if keepdim else ndim - len(normal)
    return Layout(layout.segments, 1, new_ndim), new_ndim


def _binary(args: list[Layout | None], groups: _Groups) -> Layout | None:
    """An elementwise op of two channel tensors ties their groups (a residual add)."""
    tensors = [a for a in args if a is not None]
    if not tensors:
        return None
    if len(tensors) < len(args):
        for layout in tensors:  # a channel tensor combined with an untracked tensor
            groups.block(layout)
        return None
    base = tensors[0]
    for other in tensors[1:]:
        same = len(other.segments) == len(base.segments) and other.axis == base.axis and other.flat == base.flat
        if not same or not all(groups.union(a, b) for a, b in zip(base.segments, other.segments, strict=True)):
            for layout in tensors:
                groups.block(layout)
            return None
    return base


def _concat(node: fx.Node, layouts: dict[fx.Node, Layout | None], groups: _Groups) -> Layout | None:
    """``torch.cat`` along the channel axis puts the groups side by side."""
    parts = node.args[0] if node.args else node.kwargs.get("tensors")
    dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
    found = [layouts.get(p) if isinstance(p, fx.Node) else None for p in (parts or [])]
    ok = bool(found) and all(f is not None for f in found) and len({(f.axis, f.flat, f.ndim) for f in found}) == 1
    if ok and dim == found[0].axis:
        return Layout(tuple(i for f in found for i in f.segments), found[0].axis, found[0].ndim)
    for layout in found:
        groups.block(layout)
    return None
