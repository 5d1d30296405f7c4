"""The two-layer module that replaces a converted layer, its weight count, and the rebuilder.

One definition of each converted structure serves the conversion (which then fills in SVD
weights) and ``load`` (whose rebuilder redoes the structure from the log record on a fresh model,
on the ``meta`` device when checking a file, and the file supplies the weights). A converted layer
is an ``nn.Sequential`` of two named layers, so its state-dict keys say what each part is
(``conv.depthwise.weight``, ``fc.reduce.weight``) and the parent's forward is unchanged.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from torch import nn

from netshrink.arch.factorize import KINDS
from netshrink.core import record_checks
from netshrink.core.modules import set_module

#: names of the first and second layer of each kind
PART_NAMES = {"linear": ("reduce", "expand"), "channel": ("reduce", "expand"),
              "spatial": ("vertical", "horizontal"), "separable": ("depthwise", "pointwise")}


def factored(module: nn.Module, kind: str, rank: int) -> nn.Sequential:
    """The untrained two-layer replacement of ``module`` (Linear or Conv2d) for ``kind`` and
    ``rank`` (the depth multiplier for ``separable``); stride, padding, dilation, padding mode and
    bias are kept (the bias moves to the second layer), on the module's device and dtype."""
    factory = {"device": module.weight.device, "dtype": module.weight.dtype}
    bias = module.bias is not None
    if kind == "linear":
        first = nn.Linear(module.in_features, rank, bias=False, **factory)
        second = nn.Linear(rank, module.out_features, bias=bias, **factory)
    else:
        conv = module
        ins, outs, (kh, kw) = conv.in_channels, conv.out_channels, conv.kernel_size
        (sh, sw), (dh, dw), mode = conv.stride, conv.dilation, conv.padding_mode
        if kind == "separable":
            first = nn.Conv2d(ins, ins * rank, (kh, kw), conv.stride, conv.padding, conv.dilation, groups=ins,
                              bias=False, padding_mode=mode, **factory)
            second = nn.Conv2d(ins * rank, outs, 1, bias=bias, **factory)
        elif kind == "channel":
            first = nn.Conv2d(ins, rank, (kh, kw), conv.stride, conv.padding, conv.dilation, bias=False,
                              padding_mode=mode, **factory)
            second = nn.Conv2d(rank, outs, 1, bias=bias, **factory)
        elif kind == "spatial":  # zero padding only (checked by the conversion): it splits per axis
            ph, pw = conv.padding
            first = nn.Conv2d(ins, rank, (kh, 1), (sh, 1), (ph, 0), (dh, 1), bias=False, **factory)
            second = nn.Conv2d(rank, outs, (1, kw), (1, sw), (0, pw), (1, dw), bias=bias, **factory)
        else:
            raise ValueError(f"unknown factorization kind {kind!r}; one of {KINDS}")
    names = PART_NAMES[kind]
    return nn.Sequential(OrderedDict([(names[0], first), (names[1], second)]))


def dense_weights(module: nn.Module) -> int:
    """Weights (bias excluded) of the unconverted layer."""
    return module.weight.numel()


def factored_weights(module: nn.Module, kind: str, rank: int) -> int:
    """Weights (bias excluded) of ``factored(module, kind, rank)``: r(I + O) for ``linear``,
    r(I k_h k_w + O) for ``channel``, r(I k_h + O k_w) for ``spatial``, m k_h k_w I + m I O for
    ``separable``."""
    if kind == "linear":
        return rank * (module.in_features + module.out_features)
    ins, outs, (kh, kw) = module.in_channels, module.out_channels, module.kernel_size
    return {"channel": rank * (ins * kh * kw + outs), "spatial": rank * (ins * kh + outs * kw),
            "separable": rank * kh * kw * ins + rank * ins * outs}[kind]


def max_rank(module: nn.Module, kind: str) -> int:
    """The largest meaningful rank: the rank of the matrix ``matricize`` makes (for ``separable``,
    of each input channel's O x k_h k_w slice)."""
    if kind == "linear":
        return min(module.in_features, module.out_features)
    ins, outs, (kh, kw) = module.in_channels, module.out_channels, module.kernel_size
    return {"channel": min(outs, ins * kh * kw), "spatial": min(ins * kh, outs * kw),
            "separable": min(outs, kh * kw)}[kind]


def check_factored(model: nn.Module, record: dict[str, Any]) -> None:
    """Record check of both conversions: every logged layer is a plain Linear or Conv2d of the
    model, its kind fits the layer, and its rank is from 1 to the layer's rank for that kind (for
    ``separable`` the multiplier, from 1 to the kernel's own rank)."""
    for name, layer in record_checks.mapping(record.get("layers"), "layers").items():
        module = record_checks.layer(model, name, (nn.Linear, nn.Conv2d))
        layer = record_checks.mapping(layer, f"layer {name[:80]!r}")
        allowed = ("linear",) if isinstance(module, nn.Linear) else tuple(k for k in KINDS if k != "linear")
        kind = record_checks.one_of(layer.get("kind"), allowed, f"kind of {name[:80]!r}")
        record_checks.size(layer.get("rank"), max_rank(module, kind), f"rank of {name[:80]!r}")


def repair_batchnorm(model: nn.Module, data: Any) -> None:
    """The pipeline's repair after a conversion: BatchNorm statistics re-estimated on training
    inputs (``finetune.reestimate_batchnorm_``), before fine-tuning."""
    from netshrink.arch.finetune import reestimate_batchnorm_

    reestimate_batchnorm_(model, data.train.x)


def rebuild_factored(model: nn.Module, record: dict[str, Any]) -> None:
    """Rebuilder of both conversions: give a fresh model the logged two-layer structures."""
    for name, layer in record["layers"].items():
        kind, rank = layer["kind"], layer["rank"]
        if kind not in KINDS or not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
            raise ValueError(f"layer {name!r}: bad kind {kind!r} or rank {rank!r}")
        set_module(model, name, factored(model.get_submodule(name), kind, rank))
