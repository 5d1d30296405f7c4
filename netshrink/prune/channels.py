"""The vocabulary of channel dependency analysis (``dependency.py``) and of its per-layer rules
(``channel_rules.py``): which channels must go together (``Group``, ``Entry``), how a traced
tensor's channel axis is laid out (``Layout``, ``Flow``), and ``ChannelPass``, the state of one pass
over a graph, whose methods say what a layer does with the channels it reads.

Hand-written: Torch-Pruning has this machinery, but it needs example inputs and breaks shared
layers and grouped convs with channel shuffles (docs/design.md, "Structured pruning: why our own
rules").
"""

from __future__ import annotations

import dataclasses

from torch import fx


@dataclasses.dataclass(frozen=True)
class Entry:
    """Channel ``c`` of a group is index ``(offset + c) * spread + j`` (``j < spread``) along the
    ``role`` dimension of ``module``: ``"out"`` (rows of a weight, bias), ``"in"`` (weight columns)
    or ``"channel"`` (every per-channel tensor of a BatchNorm or depthwise conv). ``width`` is the
    module's whole size along that dimension (all groups that share it side by side)."""

    module: str
    role: str
    offset: int = 0
    spread: int = 1
    width: int = 0


@dataclasses.dataclass
class Group:
    """Channels that must be removed together; ``blocked_by`` says why they cannot be, if so."""

    size: int
    entries: list[Entry] = dataclasses.field(default_factory=list)
    prunable: bool = True
    blocked_by: str | None = None

    @property
    def producers(self) -> list[str]:
        return [e.module for e in self.entries if e.role == "out"]

    def block(self, reason: str) -> None:
        if self.prunable:
            self.prunable, self.blocked_by = False, reason


@dataclasses.dataclass(frozen=True)
class Layout:
    """The channel axis of a traced tensor: groups side by side, ``axis`` 1 (conv, NC...) or -1
    (Linear, ...C), the tensor's ``ndim`` when known, and whether a conv map was flattened."""

    segments: tuple[int, ...]
    axis: int
    ndim: int | None
    flat: bool = False


@dataclasses.dataclass(frozen=True)
class Flow:
    """What a node hands its users: its output's channel ``layout`` (None: no tracked channels)
    and the output's ``ndim`` (None: unknown)."""

    layout: Layout | None
    ndim: int | None


UNTRACKED = Flow(None, None)


class _UnionFind:
    """Groups under union-find: a residual add ties two groups into one."""

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

    def __getitem__(self, i: int) -> Group:
        return self.groups[self.find(i)]

    def union(self, i: int, j: int) -> bool:
        a, b = self.find(i), self.find(j)
        if a == b:
            return True
        if self.groups[a].size != self.groups[b].size:
            return False
        merged = self.groups[b]
        merged.entries += self.groups[a].entries
        if not self.groups[a].prunable:
            merged.block(self.groups[a].blocked_by or "")
        self.parent[a] = b
        return True

    def roots(self) -> list[Group]:
        return [g for i, g in enumerate(self.groups) if self.find(i) == i]


class ChannelPass:
    """One pass over a traced graph: each node's ``Flow`` and the groups found so far.

    A rule (``channel_rules.py``) reads its node's inputs with ``input`` and records what the
    layer does with their channels: ``produce`` new ones, ``consume`` them as weight columns,
    hold per-channel tensors (``members``), or ``block`` them when it cannot follow. ``reason``
    is the current node in words, kept on the groups it blocks.
    """

    def __init__(self) -> None:
        self.groups = _UnionFind()
        self.flows: dict[fx.Node, Flow] = {}
        self.reason = ""

    def input(self, node: fx.Node, index: int = 0) -> Flow:
        """The flow of ``node``'s ``index``-th input node (untracked when there is none)."""
        inputs = node.all_input_nodes
        return self.flows.get(inputs[index], UNTRACKED) if index < len(inputs) else UNTRACKED

    def block(self, layout: Layout | None) -> None:
        """Make every group of ``layout`` unprunable."""
        if layout is not None:
            for i in layout.segments:
                self.groups[i].block(self.reason)

    def block_inputs(self, node: fx.Node, start: int = 0) -> None:
        """Block the channels of ``node``'s inputs from the ``start``-th on."""
        for arg in node.all_input_nodes[start:]:
            self.block(self.flows.get(arg, UNTRACKED).layout)

    def produce(self, name: str, size: int, axis: int, ndim: int | None) -> Layout:
        """``size`` new channels, the rows (``"out"``) of ``name``'s weight."""
        i = self.groups.new(size)
        self.groups[i].entries.append(Entry(name, "out", width=size))
        return Layout((i,), axis, ndim)

    def consume(self, layout: Layout | None, name: str, width: int) -> None:
        """``name`` reads ``layout`` on its ``width`` inputs (``"in"``), each channel ``width /
        channels`` consecutive ones after a flatten; blocked when the sizes do not fit."""
        if layout is None:
            return
        sizes = [self.groups[i].size for i in layout.segments]
        total = sum(sizes)
        spread = width // total if width % total == 0 else 0
        if spread == 0 or (spread > 1 and not layout.flat):
            self.block(layout)
            return
        offset = 0
        for i, size in zip(layout.segments, sizes, strict=True):
            self.groups[i].entries.append(Entry(name, "in", offset, spread, width))
            offset += size

    def members(self, layout: Layout | None, name: str, conv_map: bool) -> Layout | None:
        """``name`` holds a tensor per channel (``"channel"``: a BatchNorm, a depthwise conv) and
        passes the channels on; it reads axis 1 of a conv map (or of a (B, C) batch, unless
        ``conv_map``)."""
        if layout is None:
            return None
        if layout.flat or not (layout.axis == 1 or (not conv_map and layout.ndim == 2)):
            self.block(layout)
            return None
        width = sum(self.groups[i].size for i in layout.segments)
        offset = 0
        for i in layout.segments:
            self.groups[i].entries.append(Entry(name, "channel", offset, width=width))
            offset += self.groups[i].size
        return layout

    def pooled(self, layout: Layout | None) -> Layout | None:
        """Pooling keeps the channels of a conv map (and mixes the last axis of anything else)."""
        if layout is not None and (layout.axis != 1 or layout.flat):
            self.block(layout)
            return None
        return layout
