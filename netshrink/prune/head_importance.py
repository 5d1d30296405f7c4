"""How important each attention head, key-value group and MLP neuron of a transformer is.

- ``"magnitude"``: the L2 norm of the weights a head or neuron owns (its Q/K/V output rows and its O
  input columns; a neuron's up/gate rows and down column), as in Li et al. 2017's filter norms.
- ``"michel"``: Michel et al. 2019, "Are Sixteen Heads Really Better than One?", sec. 4.1: a mask
  variable xi_h multiplies each head's output; the importance of head h is the expected
  ``|dL/dxi_h|`` over calibration data, here accumulated per batch. The same mask on each MLP neuron
  scores neurons, and a key-value group's mask (all its query heads together) scores the group: its
  derivative is the sum of its heads' derivatives. Without labels the loss is the causal LM's
  next-token loss on the calibration text; for other logits the cross-entropy to the model's own
  most likely prediction (the KL to its own outputs would have zero gradient at xi = 1); for a
  model without logits (an encoder's ``last_hidden_state``) the output's projection on a fixed
  Gaussian direction ``z``, whose squared derivative has expectation ``||dy/dxi||^2``, the
  Gauss-Newton diagonal of the squared error to the model's own features.
  The masks go on as forward pre-hooks on the O and down projections: no torch.fx.
- ``"fisher"``: Kwon et al. 2022, "A Fast Post-Training Pruning Framework for Transformers", sec.
  4.1: the diagonal of the empirical Fisher information of the same masks, ``sum over samples of
  (dL/dxi)^2`` (one backward pass per calibration sample), with the same label-free loss.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from netshrink.calibration.batches import calibration_batches, run_calibration
from netshrink.core.errors import ConfigError
from netshrink.core.model_io import batch_length, map_tensors, output_tensor
from netshrink.prune.transformer_blocks import ATTENTION_KINDS, MLP_KINDS, AttentionBlock, MlpBlock

IMPORTANCES = ("magnitude", "michel", "fisher")


def _rows_norm(weight: torch.Tensor, count: int, dim: int) -> torch.Tensor:
    """The norm of each of ``count`` equal slices of ``weight`` along ``dim`` (rows 0, columns 1)."""
    w = weight.detach().float()
    w = w if dim == 0 else w.t()
    return w.reshape(count, -1).norm(dim=1)


def magnitude_scores(model: nn.Module, attention: list[AttentionBlock], mlps: list[MlpBlock]) -> dict[str, dict]:
    """``{block name: {"heads": (H,), "groups": (K,)}}`` and ``{mlp name: {"neurons": (N,)}}``."""
    scores: dict[str, dict] = {}
    for block in attention:
        module = model.get_submodule(block.name)
        q, k, v, o = (module.get_submodule(p).weight for p in ATTENTION_KINDS[block.kind])
        heads = _rows_norm(q, block.heads, 0) + _rows_norm(o, block.heads, 1)
        kv = _rows_norm(k, block.kv_heads, 0) + _rows_norm(v, block.kv_heads, 0)
        if block.kind == "bert":
            heads = heads + kv
        scores[block.name] = {"heads": heads, "groups": heads.reshape(block.kv_heads, -1).sum(1) + kv}
    for block in mlps:
        module = model.get_submodule(block.name)
        *producers, consumer = (module.get_submodule(p).weight for p in MLP_KINDS[block.kind])
        neurons = sum(_rows_norm(w, block.neurons, 0) for w in producers) + _rows_norm(consumer, block.neurons, 1)
        scores[block.name] = {"neurons": neurons}
    return scores


def _mask_hook(mask: torch.Tensor, width: int):
    """A forward pre-hook multiplying the input's last dimension, seen as ``len(mask)`` slices of
    ``width``, by ``mask``."""

    def hook(module: nn.Module, args: tuple[Any, ...]):
        x = args[0]
        scaled = (x.unflatten(-1, (len(mask), width)) * mask[:, None].to(x.dtype)).flatten(-2)
        return (scaled, *args[1:])

    return hook


def proxy_loss(model: nn.Module, outputs: Any, batch: Any, seed: int = 0) -> torch.Tensor:
    """The loss the mask gradients are taken of, without labels (see the module docstring): a causal
    LM's next-token loss on the batch's own ``input_ids``, the cross-entropy of logits to the model's
    own argmax prediction, or, for outputs without logits, their projection on a Gaussian direction
    drawn from ``seed``."""
    logits = output_tensor(outputs).float()
    mask = batch.get("attention_mask") if isinstance(batch, dict) else None
    if isinstance(outputs, Mapping) and "logits" not in outputs:
        direction = torch.randn(logits.shape, generator=torch.Generator().manual_seed(seed)).to(logits.device)
        if mask is not None and logits.dim() == 3:
            direction = direction * mask[..., None].to(direction)
        return (logits * direction).sum()
    causal = callable(getattr(model, "can_generate", None)) and model.can_generate()
    if causal and isinstance(batch, dict) and "input_ids" in batch and logits.dim() == 3:
        targets = batch["input_ids"][:, 1:].to(logits.device)
        losses = F.cross_entropy(logits[:, :-1].flatten(0, 1), targets.flatten(), reduction="none")
        weights = torch.ones_like(losses) if mask is None else mask[:, 1:].flatten().to(losses)
        return (losses * weights).sum() / weights.sum().clamp_min(1)
    targets = logits.detach().argmax(-1)
    losses = F.cross_entropy(logits.flatten(0, -2), targets.flatten(), reduction="none")
    if mask is not None and logits.dim() == 3:
        weights = mask.flatten().to(losses)
        return (losses * weights).sum() / weights.sum().clamp_min(1)
    return losses.mean()


def _samples(batches: list[Any]) -> list[Any]:
    """Every batch cut into batches of one sample (Fisher information is a sum over samples)."""
    return [map_tensors(batch, lambda t, i=i: t[i:i + 1]) for batch in batches for i in range(batch_length(batch))]


def mask_gradient_scores(model: nn.Module, attention: list[AttentionBlock], mlps: list[MlpBlock], data: Any,
                         importance: str = "michel") -> dict[str, dict]:
    """Scores from the gradients of head and neuron masks on calibration ``data``: Michel et al.'s
    ``|dL/dxi|`` per batch, or Kwon et al.'s diagonal Fisher ``(dL/dxi)^2`` per sample."""
    if data is None:
        raise ConfigError(f"importance={importance!r} needs calibration_data (a few batches of the model's inputs)")
    batches = calibration_batches(data)
    if importance == "fisher":
        batches = _samples(batches)
    combine = torch.square if importance == "fisher" else torch.abs
    device = next(model.parameters()).device
    masks: dict[str, torch.Tensor] = {}
    hooks = []
    for block in attention:
        masks[block.name] = torch.ones(block.heads, device=device, requires_grad=True)
        consumer = model.get_submodule(block.name).get_submodule(ATTENTION_KINDS[block.kind][-1])
        hooks.append(consumer.register_forward_pre_hook(_mask_hook(masks[block.name], block.head_dim)))
    for block in mlps:
        masks[block.name] = torch.ones(block.neurons, device=device, requires_grad=True)
        consumer = model.get_submodule(block.name).get_submodule(MLP_KINDS[block.kind][-1])
        hooks.append(consumer.register_forward_pre_hook(_mask_hook(masks[block.name], 1)))
    samples: dict[str, list[torch.Tensor]] = {name: [] for name in masks}  # per-sample gradients (fisher)
    heads = {b.name: torch.zeros(b.heads) for b in attention}
    groups = {b.name: torch.zeros(b.kv_heads) for b in attention}
    neurons = {b.name: torch.zeros(b.neurons) for b in mlps}
    training = model.training
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in frozen:
            p.requires_grad_(False)
        for index, batch in enumerate(batches):
            with torch.enable_grad():
                outputs = run_calibration(model, batch, index)
                grads = torch.autograd.grad(proxy_loss(model, outputs, batch, index), list(masks.values()),
                                            allow_unused=True)
            grad = {name: torch.zeros_like(m) if g is None else g.detach()
                    for (name, m), g in zip(masks.items(), grads, strict=True)}
            if importance == "fisher":
                for name in masks:
                    samples[name].append(grad[name].cpu())
            for block in attention:
                g = grad[block.name].cpu()
                heads[block.name] += combine(g)
                groups[block.name] += combine(g.reshape(block.kv_heads, -1).sum(1))
            for block in mlps:
                neurons[block.name] += combine(grad[block.name].cpu())
    finally:
        for hook in hooks:
            hook.remove()
        for p, flag in frozen:
            p.requires_grad_(flag)
        model.train(training)
    scores = {**{n: {"heads": heads[n], "groups": groups[n]} for n in heads},
              **{n: {"neurons": v} for n, v in neurons.items()}}
    if importance == "fisher":  # (units, samples) for Kwon et al.'s mask rearrangement
        for block in attention:
            stacked = torch.stack(samples[block.name], 1)
            scores[block.name]["heads_samples"] = stacked
            scores[block.name]["groups_samples"] = stacked.reshape(block.kv_heads, -1, stacked.shape[1]).sum(1)
        for block in mlps:
            scores[block.name]["neurons_samples"] = torch.stack(samples[block.name], 1)
    return scores


def importance_scores(model: nn.Module, attention: list[AttentionBlock], mlps: list[MlpBlock], importance: str,
                      data: Any) -> dict[str, dict]:
    """Scores by ``importance`` (one of ``IMPORTANCES``); higher = keep."""
    if importance in ("michel", "fisher"):
        return mask_gradient_scores(model, attention, mlps, data, importance)
    return magnitude_scores(model, attention, mlps)
