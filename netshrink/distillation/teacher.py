"""The teacher side of distillation: one model or an ensemble, frozen, in eval mode, without gradients."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from netshrink.core.errors import ConfigError, one_line
from netshrink.core.model_io import Inputs, call_model, map_tensors, output_tensor


def first_tensor(x: Inputs) -> torch.Tensor:
    """The first tensor of a batch (its device is the batch's)."""
    found: list[torch.Tensor] = []
    map_tensors(x, found.append)
    return found[0]


def device_of(model: nn.Module) -> torch.device:
    """Where the model's parameters (else buffers) live; the CPU for a model without either."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


@torch.no_grad()
def probe(model: nn.Module, x: torch.Tensor, role: str) -> torch.Tensor:
    """The model's eval-mode output on a few samples (its mode is restored), or a one-line error
    when it does not accept them."""
    was_training = model.training
    model.eval()
    try:
        return model(x.to(device_of(model)))
    except RuntimeError as exc:
        raise ConfigError(f"the {role} does not accept inputs of shape {tuple(x.shape[1:])} "
                          f"({one_line(exc, 120)}); give a model made for this data") from None
    finally:
        model.train(was_training)


class Teachers:
    """One or more frozen teachers; ``logits(x)`` is their stacked output (K, B, C).

    Each teacher is put in eval mode (no dropout, BatchNorm's running statistics) with
    ``requires_grad`` off, and moved to the device of the batches it is asked about (the training
    device) the first time it sees one; it runs under ``torch.no_grad``.
    """

    def __init__(self, teachers: nn.Module | Sequence[nn.Module]) -> None:
        models = [teachers] if isinstance(teachers, nn.Module) else list(teachers)
        if not models or not all(isinstance(m, nn.Module) for m in models):
            raise ConfigError("give the teacher as a model or a non-empty list of models")
        for model in models:
            model.eval().requires_grad_(False)
        self.models = models
        self._device: torch.device | None = None

    def __len__(self) -> int:
        return len(self.models)

    @torch.no_grad()
    def outputs(self, x: Inputs) -> list[Any]:
        """Each teacher's raw output for the batch ``x`` (a tensor, or keyword inputs as a dict)."""
        device = first_tensor(x).device
        if self._device != device:
            for model in self.models:
                model.to(device).eval()
            self._device = device
        return [call_model(model, x) for model in self.models]

    def logits(self, x: Inputs) -> torch.Tensor:
        """(K, B, C) logits of the K teachers for the batch ``x`` (B, ...)."""
        return torch.stack([output_tensor(output).float() for output in self.outputs(x)])

    def fingerprints(self) -> list[str]:
        """SHA-256 of each teacher's state dict (names, dtypes, shapes, bytes): names the teachers
        a logit cache was computed with."""
        return [state_fingerprint(model) for model in self.models]


def state_fingerprint(model: nn.Module) -> str:
    """SHA-256 over a model's state dict, in key order."""
    digest = hashlib.sha256()
    for key, tensor in model.state_dict().items():
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
