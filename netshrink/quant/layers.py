"""Which tensors the quantization family acts on, and the checks every quantizer shares.

Linear, Conv and Embedding weights (the token embedding is half the weights of a small BERT-style
encoder) and the packed q/k/v projection of ``nn.MultiheadAttention`` (its output projection is a
Linear already). Bits are one value for every chosen layer, or a ``{layer name: bits}`` map for
mixed precision by hand (Deep Compression used 8 bits for conv and 5 for fc layers).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from netshrink.core.errors import ConfigError
from netshrink.core.modules import get_module
from netshrink.core.selection import WEIGHTED_LAYERS, LayerFilter, select, weight_name

Bits = int | str

QUANTIZABLE_LAYERS = (*WEIGHTED_LAYERS, nn.Embedding, nn.MultiheadAttention)
"""What quantization acts on (``core.select``'s kinds)."""


def check_bits(bits: Any, allowed: tuple[Any, ...], low: int, high: int, what: str = "bits") -> Bits:
    """``bits`` if it is an int in [low, high] or one of ``allowed``'s names, else a one-line error."""
    if isinstance(bits, str) and bits in allowed:
        return bits
    if isinstance(bits, bool) or not isinstance(bits, int) or not low <= bits <= high:
        names = "".join(f" or {a!r}" for a in allowed)
        raise ConfigError(f"{what} must be an integer from {low} to {high}{names}, got {bits!r}")
    return bits


def check_bits_setting(bits: Any, allowed: tuple[Any, ...], low: int, high: int) -> None:
    """Check a bits value or a non-empty ``{layer: bits}`` map."""
    if isinstance(bits, Mapping):
        if not bits:
            raise ConfigError("the bits map is empty; give {layer name: bits}")
        for name, value in bits.items():
            check_bits(value, allowed, low, high, f"bits of {name!r}")
    else:
        check_bits(bits, allowed, low, high)


def targets(model: nn.Module, bits: Bits | Mapping[str, Bits],
            filter_fn: LayerFilter | None) -> list[tuple[str, nn.Module, str, Bits]]:
    """``(layer name, module, tensor name, bits)`` for every tensor to quantize, in module order.

    A ``{layer: bits}`` map names the layers itself; otherwise ``filter_fn`` picks among the
    quantizable layers (``core.select``). Their weights must be finite.
    """
    layers = list(bits) if isinstance(bits, Mapping) else None
    chosen = [(n, m, weight_name(m), bits[n] if layers is not None else bits)
              for n, m in select(model, layers, filter_fn, kinds=QUANTIZABLE_LAYERS).items()]
    if not chosen:
        raise ConfigError(f"nothing to quantize in {type(model).__name__}: no Linear, Conv or Embedding layer "
                          "passes the filter; check filter_fn or the bits map")
    for name, module, tensor_name, _ in chosen:
        check_finite(getattr(module, tensor_name), name or type(model).__name__)
    return chosen


def check_finite(weight: torch.Tensor, layer: str) -> None:
    """A one-line error when ``weight`` holds NaN or infinite values."""
    if not bool(torch.isfinite(weight.detach()).all()):
        bad = int((~torch.isfinite(weight.detach())).sum())
        raise ConfigError(f"layer {layer!r} has {bad} NaN or infinite weight(s); retrain or repair the model "
                          "before quantizing it")


def stored_on_grids(model: nn.Module, record: dict[str, Any]) -> dict[str, str]:
    """``Technique.stored_as`` of the techniques that leave each weight on integer grids per row or
    group (per-channel and per-group quantization, GPTQ, AWQ, SmoothQuant): every layer the record
    names, ``{"<layer>.weight": "group_int"}``; layers the model no longer has are left out."""
    found = {}
    for layer in record.get("layers", {}):
        try:
            module = get_module(model, layer)
        except (AttributeError, KeyError, ValueError):
            continue
        tensor = weight_name(module) if isinstance(module, QUANTIZABLE_LAYERS) else None
        if tensor is not None:
            found[f"{layer}.{tensor}" if layer else tensor] = "group_int"
    return found
