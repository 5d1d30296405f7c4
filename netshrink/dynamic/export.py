"""Dynamic models as ONNX graphs that ONNX Runtime runs: early exits as ``If`` nodes, one graph per width.

Early exits (BranchyNet, Teerapittayanon et al. 2016, sec. III-C). PyTorch drops the samples that
left from the batch before the next stage runs; an exported graph cannot shrink its batch by data
except inside control flow, so ``ExitGraph`` writes the same decisions with ``torch.cond``, which
the ONNX exporter turns into ``If`` nodes: at each early exit, when every sample of the batch is
confident enough, the graph returns that exit's logits and the later stages do not run; otherwise
the rest of the network runs on the batch and each sample keeps the logits of the first exit it
passed (``torch.where``). Every sample gets the output PyTorch gives it. At batch 1, the way an
early-exit model is deployed, the later stages are skipped exactly when PyTorch skips them; in a
larger batch they run for the whole batch as soon as one sample stays. Chosen over one graph per
exit because one file then serves every input with the model's calibrated thresholds, as PyTorch
does, and ONNX Runtime runs ``If`` on every execution provider. A model set to a fixed exit exports
the path to that exit only; thresholds all at 1 (nobody leaves early) export the network without
its heads.

Slimmable widths (Yu et al. 2019): a width chooses weight slices by Python numbers, not tensors, so
each width is its own graph: ``OUT.onnx`` holds the width the model is set to (the widest, where
``profile_`` and the pipeline leave it) and ``OUT.width-0.5.onnx`` each other width (its value in
the name).
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import torch
from torch import nn

from netshrink.dynamic.early_exit import SPEC_ATTR, confidence, exit_spec, leaves_by_confidence
from netshrink.dynamic.slimmable import WIDTHS_ATTR, get_width, set_width
from netshrink.dynamic.stages import cached_stages


class ExitGraph(nn.Module):
    """A model with exits, written for ``torch.export``: its operating point (fixed exit or
    thresholds) fixed at construction, the leave-by-confidence decisions as ``torch.cond``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        spec = exit_spec(model)
        self.stages = nn.ModuleList(cached_stages(model, spec.blocks))  # shares the model's layers
        self.heads = model.exit_heads
        self.criterion = spec.criterion
        self.register_buffer("thresholds", model.exit_thresholds.detach().clone())
        fixed = int(model.exit_fixed)
        if fixed < 0 and not leaves_by_confidence(model):
            fixed = len(self.heads)  # nobody leaves early: the whole network
        self.fixed = fixed  # -1: leave by confidence

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fixed < 0:
            return self._from(0, x)
        for stage in self.stages[:self.fixed + 1]:
            x = stage(x)
        return x if self.fixed == len(self.heads) else self.heads[self.fixed](x)

    def _from(self, k: int, x: torch.Tensor) -> torch.Tensor:
        """Stage ``k`` on ``x`` and what follows: exit ``k``'s logits when the whole batch leaves
        there, else each sample's logits from the first exit it passes (unrolled at trace time)."""
        x = self.stages[k](x)
        if k == len(self.heads):
            return x
        logits = self.heads[k](x)
        leave = confidence(logits, self.criterion) > self.thresholds[k]

        def everyone_leaves(x: torch.Tensor, logits: torch.Tensor, leave: torch.Tensor) -> torch.Tensor:
            return logits.clone()  # a branch may not return its input itself

        def some_stay(x: torch.Tensor, logits: torch.Tensor, leave: torch.Tensor) -> torch.Tensor:
            return torch.where(leave.unsqueeze(-1), logits, self._from(k + 1, x))

        return torch.cond(leave.all(), everyone_leaves, some_stay, (x, logits, leave))


def exportable(model: nn.Module) -> nn.Module:
    """What ``torch.export`` should capture for ``model``: an ``ExitGraph`` for a model with
    exits, the model itself otherwise (a slimmable model at the width it is set to)."""
    return ExitGraph(model).eval() if getattr(model, SPEC_ATTR, None) is not None else model


@dataclasses.dataclass(frozen=True)
class OperatingGraph:
    """One ONNX file to write: where, which operating point (in words), and the model set to it."""

    path: Path
    point: str
    model: nn.Module


def operating_point(model: nn.Module) -> str:
    """The operating point ``model`` runs at, in words (what its exported graph computes)."""
    if getattr(model, WIDTHS_ATTR, None) is not None:
        return f"width {get_width(model):g}"
    if getattr(model, SPEC_ATTR, None) is None:
        return "the network"
    graph = ExitGraph(model)
    if graph.fixed == len(graph.heads):
        return "the whole network (no sample leaves early)"
    if graph.fixed >= 0:
        return f"fixed exit {graph.fixed} of {len(graph.heads) + 1}"
    thresholds = ", ".join(f"{t:.3g}" for t in graph.thresholds.tolist())
    return f"leaving by confidence ({exit_spec(model).criterion} > {thresholds}; early exits as ONNX If)"


def width_path(path: Path, width: float) -> Path:
    """``OUT.width-0.5.onnx`` for ``OUT.onnx``: the file of one other width."""
    return path.with_name(f"{path.stem}.width-{width:g}{path.suffix}")


def operating_graphs(model: nn.Module, path: str | Path) -> list[OperatingGraph]:
    """The graphs a model exports to: one for a plain model or a model with exits (its current
    operating point), one per width for a slimmable model (its current width at ``path``)."""
    path = Path(path)
    widths = getattr(model, WIDTHS_ATTR, None)
    if widths is None:
        return [OperatingGraph(path, operating_point(model), model)]
    current = get_width(model)
    graphs = [OperatingGraph(path, operating_point(model), model)]
    for width in widths:
        if width != current:
            other = copy.deepcopy(model)
            set_width(other, width)
            graphs.append(OperatingGraph(width_path(path, width), operating_point(other), other))
    return graphs
