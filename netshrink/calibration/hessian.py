"""The layer-wise Hessian ``H = 2 X X^T`` of a layer's inputs, accumulated over calibration batches.

GPTQ (Frantar et al. 2022, section 3) and SparseGPT (Frantar & Alistarh 2023, section 3) both solve
the layer-wise problem ``min ||W X - W' X||^2`` over the columns ``X`` of the layer's inputs seen on
calibration data; its Hessian with respect to a row of ``W`` is ``H = 2 X X^T``, one matrix shared
by every row. Wanda (Sun et al. 2023, section 3) needs only the norms ``||X_j||_2`` of each input
feature, which are ``sqrt(diag(X X^T))``: ``LayerInputs(diagonal=True)`` keeps just that diagonal.

The running mean follows the reference implementation of GPTQ (``add_batch``): after ``n`` rows,
``H = (2 / n) X X^T``, which has the same minimiser as the sum and keeps the numbers in range.
A row of ``X`` is one input vector of a Linear (every token of every sequence) or one unfolded
receptive field of a convolution (``torch.nn.functional.unfold``, as GPTQ's ``add_batch`` does), so
the weight's columns are ``weight.flatten(1)``'s. A grouped convolution has one Hessian per group
(its output channels ``[g * out / groups, (g + 1) * out / groups)`` see only their group's inputs).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from netshrink.calibration.obs import dampened
from netshrink.core.errors import ConfigError
from netshrink.core.selection import LayerFilter, select

LAYER_KINDS: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d)
"""The layers whose inputs this accumulates (the layer-wise solvers' kinds)."""


def solvable_layers(model: nn.Module, layers: Sequence[str] | None = None,
                    filter_fn: LayerFilter | None = None) -> dict[str, nn.Module]:
    """``core.select`` among the ``LAYER_KINDS``, less two kinds of layer a solver cannot change on
    its own: the output projection of an ``nn.MultiheadAttention`` (the attention uses its weight
    without calling it, so no hook sees its inputs) and a layer whose weight is tied to another
    module's (a language model's output layer and token embedding: a solver writing it would change
    the other module too). Naming one of them is a one-line ConfigError."""
    hidden = {f"{name}.out_proj" if name else "out_proj" for name, m in model.named_modules()
              if isinstance(m, nn.MultiheadAttention)}
    owners: dict[int, list[str]] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        owners.setdefault(id(parameter), []).append(name)
    chosen = select(model, layers, filter_fn, kinds=LAYER_KINDS)
    kept = {}
    for name, module in chosen.items():
        stored = module.parametrizations["weight"].original if parametrize.is_parametrized(module, "weight") \
            else module.weight
        others = [owner for owner in owners.get(id(stored), []) if not owner.startswith(f"{name}.")]
        why = "is the output projection of an nn.MultiheadAttention, whose inputs calibration cannot see" \
            if name in hidden else f"shares its weight with {others[0]!r}" if others else None
        if why is None:
            kept[name] = module
        elif layers is not None:
            raise ConfigError(f"layer {name!r} {why}; leave it out")
    return kept


def groups_of(layer: nn.Module) -> int:
    """The number of independent input groups of ``layer`` (a grouped convolution's ``groups``)."""
    return getattr(layer, "groups", 1)


def input_rows(layer: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """``(groups, rows, columns)``: every input vector ``layer`` applies its weight's rows to."""
    if isinstance(layer, nn.Linear):
        return inputs.reshape(1, -1, layer.in_features)
    if isinstance(layer, nn.Conv1d):  # a (1, k) Conv2d over a height-1 image
        inputs = (inputs if inputs.dim() == 3 else inputs.unsqueeze(0)).unsqueeze(2)
        sizes = {name: (1, getattr(layer, name)[0]) for name in ("kernel_size", "stride", "dilation")}
        padding = 0 if isinstance(layer.padding, str) else (0, layer.padding[0])
    else:
        inputs = inputs if inputs.dim() == 4 else inputs.unsqueeze(0)
        sizes = {name: getattr(layer, name) for name in ("kernel_size", "stride", "dilation")}
        padding = 0 if isinstance(layer.padding, str) else layer.padding
    if isinstance(layer.padding, str) or layer.padding_mode != "zeros":  # 'same', reflect, circular...
        pads = layer._reversed_padding_repeated_twice  # what the layer's own forward pads with
        mode = "constant" if layer.padding_mode == "zeros" else layer.padding_mode
        inputs, padding = F.pad(inputs, pads if len(pads) == 4 else (*pads, 0, 0), mode=mode), 0
    columns = F.unfold(inputs, sizes["kernel_size"], dilation=sizes["dilation"], padding=padding,
                       stride=sizes["stride"])  # (batch, channels * kernel, positions)
    groups = groups_of(layer)
    columns = columns.reshape(columns.shape[0], groups, -1, columns.shape[-1])
    return columns.permute(1, 0, 3, 2).reshape(groups, -1, columns.shape[2])


class LayerInputs:
    """The Hessian ``2 X X^T / n`` (or its diagonal) of the inputs one layer has seen so far.

    ``hessian`` is ``(groups, columns, columns)`` (``(groups, columns)`` with ``diagonal``), in
    float32 on the inputs' device; ``rows`` counts the input vectors seen per group. ``abs_mean``,
    ``low`` and ``high`` (``(groups, columns)``) are each column's mean ``|x|``, minimum and maximum,
    the activation statistics of AWQ and SmoothQuant. ``cross`` (``(groups, columns, columns)``,
    None unless ``add`` got references) is ``2 X_ref^T X / n``: each input row beside the row the
    original model gave the layer at the same place (``asymmetric_target``).
    """

    def __init__(self, layer: nn.Module, diagonal: bool = False) -> None:
        self.layer, self.diagonal = layer, diagonal
        self.hessian: torch.Tensor | None = None
        self.abs_mean: torch.Tensor | None = None
        self.low: torch.Tensor | None = None
        self.high: torch.Tensor | None = None
        self.cross: torch.Tensor | None = None
        self.rows = 0

    def add(self, inputs: torch.Tensor, reference: torch.Tensor | None = None) -> None:
        """Fold one batch of the layer's inputs into the running mean; ``reference``: the inputs the
        original model gave the layer on the same batch (same shape), for ``cross``."""
        rows = input_rows(self.layer, inputs.detach()).float()
        count = rows.shape[1]
        if count == 0:
            return
        if self.hessian is None:
            shape = rows.shape[::2] if self.diagonal else (rows.shape[0], rows.shape[2], rows.shape[2])
            self.hessian = torch.zeros(shape, device=rows.device)
            self.abs_mean = torch.zeros(rows.shape[::2], device=rows.device)
            self.low, self.high = rows.amin(dim=1), rows.amax(dim=1)
        self.hessian *= self.rows / (self.rows + count)
        self.abs_mean += (rows.abs().sum(dim=1) - count * self.abs_mean) / (self.rows + count)
        self.low, self.high = torch.minimum(self.low, rows.amin(dim=1)), torch.maximum(self.high, rows.amax(dim=1))
        self.rows += count
        if reference is not None:
            others = input_rows(self.layer, reference.detach()).float()
            if others.shape != rows.shape:
                raise ConfigError(f"the original model gave {type(self.layer).__name__} inputs of shape "
                                  f"{tuple(reference.shape)} beside {tuple(inputs.shape)}; asymmetric calibration "
                                  "needs the same shapes")
            if self.cross is None:
                self.cross = torch.zeros(rows.shape[0], rows.shape[2], rows.shape[2], device=rows.device)
            self.cross *= (self.rows - count) / self.rows
            self.cross += (others.transpose(1, 2) @ rows) * (2 / self.rows)
        rows = rows * (2 / self.rows) ** 0.5
        if self.diagonal:
            self.hessian += rows.pow(2).sum(dim=1)
        else:
            self.hessian += rows.transpose(1, 2) @ rows

    def feature_norms(self) -> torch.Tensor:
        """``||X_j||_2`` of every input feature ``j`` (``(groups, columns)``): Wanda's input norms."""
        diagonal = self.hessian if self.diagonal else torch.diagonal(self.hessian, dim1=1, dim2=2)
        return (diagonal * self.rows / 2).clamp_min(0).sqrt()


def asymmetric_target(weight: torch.Tensor, hessian: torch.Tensor, cross: torch.Tensor, damp: float) -> torch.Tensor:
    """``W* = W + W (G - H) (H + lambda I)^-1``, the least-squares weight that maps the inputs a
    layer gets in the model being changed, ``X``, to the outputs the original layer gave on the
    original's inputs, ``X_ref`` (``min ||X W*^T - X_ref W^T||``, whose solution is ``W G H^-1``;
    ``H = X^T X``, ``G = X_ref^T X``, each times ``2 / n``). Only the correction is dampened (by
    ``damp`` times H's mean diagonal, as the solvers dampen), so equal inputs give back ``W``
    itself rather than a ridge-shrunk copy.

    This is the asymmetric calibration of GPTAQ (Li et al. 2025, "GPTAQ: Efficient Finetuning-Free
    Quantization for Asymmetric Calibration", sec. 3): the layer-wise target is the original
    model's output, not this layer's own output on already-changed inputs, so each layer also makes
    up for the error of the layers before it. Since ``||X W'^T - X_ref W^T||^2 = ||X (W' - W*)^T||^2
    + const``, the usual solvers (GPTQ, SparseGPT), run on ``W*`` with the same ``H``, solve the
    asymmetric problem; that reduction, rather than the paper's in-sweep update, is ours and
    hand-written (no library offers it). The correction is a regression fitted on the calibration
    tokens: give many more of them than the layer has inputs (MiniLM, 16 passages of 128 tokens for
    inputs of 384-1536: worse than without it; 128 passages: better). ``weight`` is ``(rows,
    columns)``; float32 result."""
    damped, _ = dampened(hessian, damp)
    correction = torch.linalg.solve(damped, (cross.double() - hessian.double()).t() @ weight.double().t())
    target = (weight.double() + correction.t()).float()
    if not bool(torch.isfinite(target).all()):
        raise ConfigError(f"asymmetric calibration gave non-finite weights (damp {damp}); raise damp or give more "
                          "calibration data")
    return target
