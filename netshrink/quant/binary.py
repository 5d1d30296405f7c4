"""Binary weights: BinaryConnect (Courbariaux et al. 2015) and XNOR-Net's scaled binary weights
(BWN; Rastegari et al. 2016, section 3.1), with optional binary activations.

- ``binaryconnect``: ``w_b = sign(w)`` (+1 for w >= 0). Stochastic (section 2.3): ``w_b = +1`` with
  probability ``hard_sigmoid(w) = clip((w + 1) / 2, 0, 1)`` in training mode; deterministic in eval
  mode and when baked by ``finalize_``.
- ``bwn``: ``w_b = alpha * sign(w)`` with ``alpha = mean |w|`` per output channel (dim 0), the
  scale minimising ``||w - alpha * b||^2``.

Training keeps real-valued shadow weights (the parametrization's original): gradients reach them
straight through the sign (the hardtanh estimator: gradient 1 where ``|w| <= 1``, 0 outside) and
they are clipped to [-1, 1] (BinaryConnect's Algorithm 1). The clip happens when the weight is
read, i.e. before every forward pass, so it holds in ``fit()`` and in any hand-written loop.
``keep_first_last`` leaves the first and last chosen layers in full precision, as both papers do.
Binary activations replace the input of each binarized layer except the first by its sign (again
with the hardtanh straight-through gradient); they are forward pre-hooks that ``load`` reinstalls
from the log. After ``finalize_`` each row holds two values (+-alpha), which ``save`` stores as one
bit per weight plus the row's pair.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from netshrink.core import record_checks
from netshrink.core.config import Config, unlogged
from netshrink.core.errors import ConfigError
from netshrink.core.modules import get_module
from netshrink.core.registry import apply_, register
from netshrink.core.selection import LayerFilter
from netshrink.quant.activations import ACTIVATION_LAYERS, install_input_transforms
from netshrink.quant.layers import targets

METHODS = ("binaryconnect", "bwn")


@dataclasses.dataclass(frozen=True)
class Binarize(Config):
    """Binary weights (1 bit per weight, plus one scale per output channel for ``bwn``).

    Args:
        method: ``"binaryconnect"`` (+-1) or ``"bwn"`` (+-alpha per output channel).
        stochastic: BinaryConnect's stochastic binarization while training.
        activations: also binarize the inputs of the binarized Linear and Conv layers (never the
            network's first layer).
        keep_first_last: leave the first and last chosen layers in full precision.
        filter_fn: ``filter_fn(module, name) -> bool`` picking among the Linear, Conv, Embedding and
            attention in-projection layers (default: all of them). Not logged; the log lists the
            layers binarized.

    Example:
        >>> binarize_(model, Binarize(method="bwn")); fit(model, data, FitConfig(epochs=5)); finalize_(model)
    """

    method: str = "bwn"
    stochastic: bool = False
    activations: bool = False
    keep_first_last: bool = True
    filter_fn: LayerFilter | None = unlogged()

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"unknown binarization method {self.method!r}; choose one of {list(METHODS)}")
        for field in ("stochastic", "activations", "keep_first_last"):
            if not isinstance(getattr(self, field), bool):
                raise ConfigError(f"{field} must be true or false, got {getattr(self, field)!r}")


class _SignSTE(torch.autograd.Function):
    """``sign`` forward (given as ``signs``), hardtanh's gradient backward."""

    @staticmethod
    def forward(ctx: Any, values: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(values)
        return signs

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (values,) = ctx.saved_tensors
        return grad * (values.abs() <= 1).to(grad.dtype), None


def binary_sign(values: torch.Tensor) -> torch.Tensor:
    """+1 where ``values >= 0`` else -1, with the hardtanh straight-through gradient."""
    return _SignSTE.apply(values, torch.where(values >= 0, 1.0, -1.0).to(values.dtype))


class BinaryWeight(nn.Module):
    """The parametrization ``w -> sign(w)`` (``binaryconnect``) or ``alpha * sign(w)`` (``bwn``)."""

    def __init__(self, method: str, stochastic: bool) -> None:
        super().__init__()
        self.method, self.stochastic = method, stochastic

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if weight.is_leaf and bool((weight.detach().abs() > 1).any()):
            with torch.no_grad():
                weight.clamp_(-1.0, 1.0)  # BinaryConnect's clip of the shadow weights
        if self.stochastic and self.training:
            probability = ((weight.detach() + 1) / 2).clamp(0, 1)  # hard sigmoid
            signs = torch.where(torch.rand_like(probability) < probability, 1.0, -1.0).to(weight.dtype)
            binary = _SignSTE.apply(weight, signs)
        else:
            binary = binary_sign(weight)
        if self.method == "binaryconnect":
            return binary
        alpha = weight.detach().abs().reshape(weight.shape[0], -1).mean(dim=1)  # (out channels,)
        return binary * alpha.reshape(-1, *[1] * (weight.dim() - 1))


def _rebuild(model: nn.Module, record: dict) -> None:
    install_input_transforms(model, dict.fromkeys(record.get("binary_inputs", []), binary_sign))


def _deterministic(model: nn.Module) -> None:
    """Finalize part: bake deterministic signs even when finalize_ runs in training mode."""
    for module in model.modules():
        if isinstance(module, BinaryWeight):
            module.eval()


def binarize_(model: nn.Module, config: Binarize) -> nn.Module:
    """Binarize ``model``'s weights in place (see ``Binarize``); logged. Returns the model."""
    return apply_(model, config)


def _check(model: nn.Module, record: dict) -> None:
    record_checks.layers(model, record.get("layers"))
    record_checks.layers(model, record.get("binary_inputs", []), ACTIVATION_LAYERS)


@register(Binarize, "binarize", rebuild=_rebuild, check=_check, finalize=_deterministic, verb=binarize_)
def _binarize(model: nn.Module, config: Binarize) -> dict:
    chosen = targets(model, 1, config.filter_fn)
    if config.keep_first_last:
        chosen = chosen[1:-1]
    if not chosen:
        raise ConfigError("nothing left to binarize: keep_first_last keeps the only layers chosen; "
                          "set keep_first_last=False or choose more layers")
    for _, module, tensor_name, _ in chosen:
        parametrize.register_parametrization(module, tensor_name, BinaryWeight(config.method, config.stochastic))
    names = [name for name, *_ in chosen]
    binary_inputs = [name for name in (names if config.keep_first_last else names[1:])
                     if isinstance(get_module(model, name), ACTIVATION_LAYERS)] if config.activations else []
    install_input_transforms(model, dict.fromkeys(binary_inputs, binary_sign))
    return {"layers": names, "binary_inputs": binary_inputs}
