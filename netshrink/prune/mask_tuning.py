"""Least-squares mask tuning after heads and neurons are removed: Kwon et al. 2022, "A Fast
Post-Training Pruning Framework for Transformers", sec. 4.3.

Each kept head or neuron gets a scale ``m`` (its mask value, 1 after pruning) chosen so that the
pruned block's output projection reproduces the original model's, block by block in model order:
``min_m sum_t || sum_u m_u c_tu - (y_t - bias) ||^2`` where ``c_tu`` is unit ``u``'s contribution
to token ``t`` (a head's slice of the O projection, a neuron's down-projection column, on the
pruned model's own inputs, so earlier blocks' errors are corrected) and ``y_t`` is the original
model's projection output on the original's inputs. The normal equations are accumulated over the
calibration tokens (padding left out): for heads from the contributions themselves, for neurons as
``(X^T X) * (W^T W)`` and ``((Y - b) W * X).sum``, so nothing of size tokens x units x width is
held. Scales outside [-10, 10] are not used (the block keeps its plain pruned weights), as the
authors' ``rescale_mask`` stops there; the others are folded into the projection's columns, so the
model keeps its shape. Unlike the authors' code, the target is the projection's output alone: the
drift of the residual stream the block adds to is not folded into it. Hand-written: no library
solves this layer-wise problem.

``tune="weights"`` solves the same problem with every weight of the kept columns and the bias free
rather than one scale per unit: ``min_{W', b'} sum_t || W' x_t + b' - y_t ||^2``, the layer-wise
reconstruction of the pruned consumer layer that ZipLM (Kurtic et al. 2023, sec. 3.1) and FLAP's
bias compensation (An et al. 2024, sec. 3.3) make, here by the normal equations
``[X 1]^T [X 1] [W' b']^T = [X 1]^T Y`` with a ridge of ``REFIT_DAMP`` times their mean diagonal.
Without the ridge a unit's scale would be one such solution, so this would fit the calibration
tokens at least as well; the ridge (toward zero) trades some of that fit for less overfitting
(MiniLM, 50% FLOPs, 64 passages with a ridge of 1e-4 fitted worse than the scales on validation).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from netshrink.calibration.batches import calibration_batches, run_calibration
from netshrink.prune.transformer_blocks import ATTENTION_KINDS, MLP_KINDS, attention_block, mlp_block

#: ridge added to the normal equations, relative to their mean diagonal
DAMP = 1e-6
LIMIT = 10.0
#: ridge of the whole-weight refit, relative to the mean diagonal of its normal equations
REFIT_DAMP = 1e-2
TUNINGS = ("scales", "weights")


def _consumer(model: nn.Module, name: str) -> tuple[nn.Linear, int]:
    """The output projection of block ``name`` and the width of one unit's columns."""
    module = model.get_submodule(name)
    block = attention_block(name, module)
    if block is not None:
        return module.get_submodule(ATTENTION_KINDS[block.kind][-1]), block.head_dim
    return module.get_submodule(MLP_KINDS[mlp_block(name, module).kind][-1]), 1


def _tokens(tensor: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """``(batch, tokens, width)`` as ``(kept tokens, width)``."""
    flat = tensor.reshape(-1, tensor.shape[-1]).float()
    return flat if keep is None else flat[keep.to(flat.device)]


def _capture(model: nn.Module, layer: nn.Module, batch: Any, index: int, inputs: bool) -> torch.Tensor:
    """The input (or output) of ``layer`` when ``model`` runs on ``batch``."""
    seen: list[torch.Tensor] = []
    if inputs:
        handle = layer.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    else:
        handle = layer.register_forward_hook(lambda m, args, out: seen.append(out.detach()))
    try:
        with torch.no_grad():
            run_calibration(model, batch, index)
    finally:
        handle.remove()
    return seen[0]


def _token_pairs(model: nn.Module, original: nn.Module, name: str, batches: list[Any]):
    """Batch by batch, ``(x, y)``: the inputs of block ``name``'s output projection in the pruned
    ``model`` and that projection's outputs in ``original``, over the tokens that are not padding."""
    layer, target_layer = _consumer(model, name)[0], _consumer(original, name)[0]
    for index, batch in enumerate(batches):
        mask = batch.get("attention_mask") if isinstance(batch, dict) else None
        keep = None if mask is None else mask.reshape(-1).bool()
        yield (_tokens(_capture(model, layer, batch, index, inputs=True), keep),
               _tokens(_capture(original, target_layer, batch, index, inputs=False), keep))


def _ridge_solve(gram: torch.Tensor, right: torch.Tensor, relative: float) -> torch.Tensor:
    """``(gram + lambda I)^-1 right``, ``lambda`` being ``relative`` times gram's mean diagonal."""
    damp = relative * gram.diagonal().mean().clamp_min(1e-12)
    return torch.linalg.solve(gram + damp * torch.eye(len(gram), dtype=gram.dtype), right)


def tune_block_(model: nn.Module, original: nn.Module, name: str, batches: list[Any]) -> torch.Tensor:
    """Solve and fold the scales of block ``name``'s kept units; returns the scales (ones where the
    solution leaves [-10, 10] and the block is left as it is)."""
    layer, width = _consumer(model, name)
    weight = layer.weight.detach().float()  # (out, units * width)
    units = weight.shape[1] // width
    gram = torch.zeros(units, units, dtype=torch.float64)
    right = torch.zeros(units, dtype=torch.float64)
    bias = 0 if layer.bias is None else layer.bias.detach().float()
    for x, target in _token_pairs(model, original, name, batches):  # x: (tokens, units * width)
        target = target - bias
        if width == 1:
            gram += ((x.t() @ x) * (weight.t() @ weight)).double().cpu()
            right += ((target @ weight) * x).sum(0).double().cpu()
        else:
            parts = torch.einsum("tuw,ouw->tuo", x.unflatten(1, (units, width)), weight.unflatten(1, (units, width)))
            gram += torch.einsum("tuo,tvo->uv", parts, parts).double().cpu()
            right += torch.einsum("tuo,to->u", parts, target).double().cpu()
    scales = _ridge_solve(gram, right, DAMP)
    if not bool(torch.isfinite(scales).all()) or float(scales.abs().max()) > LIMIT:
        return torch.ones(units)
    scales = scales.to(layer.weight.dtype).to(layer.weight.device)
    with torch.no_grad():
        layer.weight.mul_(scales.repeat_interleave(width)[None, :])
    return scales


def refit_block_(model: nn.Module, original: nn.Module, name: str, batches: list[Any]) -> None:
    """Solve block ``name``'s output projection, weight and bias, by least squares (the module
    docstring's ``tune="weights"``) and write it in; left as it is if the solution is not finite."""
    layer, _ = _consumer(model, name)
    weight = layer.weight.detach()
    bias = layer.bias is not None
    size = weight.shape[1] + bias
    gram = torch.zeros(size, size, dtype=torch.float64)
    right = torch.zeros(weight.shape[0], size, dtype=torch.float64)
    for x, target in _token_pairs(model, original, name, batches):
        x, target = x.double().cpu(), target.double().cpu()
        if bias:
            x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
        gram += x.t() @ x
        right += target.t() @ x
    solution = _ridge_solve(gram, right.t(), REFIT_DAMP).t()
    if not bool(torch.isfinite(solution).all()):
        return
    with torch.no_grad():
        layer.weight.copy_(solution[:, :weight.shape[1]].to(weight))
        if bias:
            layer.bias.copy_(solution[:, -1].to(layer.bias))


def tune_masks_(model: nn.Module, original: nn.Module, names: list[str], data: Any, how: str = "scales") -> None:
    """Tune the kept units of the blocks ``names`` (in model order) of the pruned ``model`` against
    ``original`` on calibration ``data``: their ``"scales"``, or their output projections'
    ``"weights"`` and biases (see the module docstring)."""
    batches = calibration_batches(data)
    training, original_training = model.training, original.training
    model.eval()
    original.eval()
    tune = tune_block_ if how == "scales" else refit_block_
    try:
        for name in names:
            tune(model, original, name, batches)
    finally:
        model.train(training)
        original.train(original_training)
