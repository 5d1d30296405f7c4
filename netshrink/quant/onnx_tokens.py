"""Token-id models to ONNX: Hugging Face models that take ``input_ids`` / ``attention_mask`` (and
``token_type_ids``) and return a ``ModelOutput``.

``export_token_model(model, path, inputs)`` captures the model with ``torch.export`` (through
``torch.onnx.export(dynamo=True)``) behind a small wrapper whose positional inputs are the token
tensors the batch holds, in the order ``TOKEN_INPUTS`` names them, and whose one output is the
``ModelOutput``'s main tensor (``logits``, else ``last_hidden_state``: ``core.model_io``'s
``MAIN_OUTPUT_KEYS``). Batch and sequence axes are dynamic (``torch.export.Dim``), so the file
takes any batch of any length up to the model's position table. A causal LM is exported without
its KV cache (``use_cache=False``: one full forward; decoding with a cache is
optimum's / onnxruntime-genai's job). The file is checked like every netshrink export: ONNX Runtime
runs it on the whole batch given and its outputs must match PyTorch's within ``TOKEN_TOLERANCE``
of the largest output, else nothing is written.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from netshrink.core.errors import ConfigError, one_line
from netshrink.core.model_io import MAIN_OUTPUT_KEYS

#: the token tensors a Hugging Face text model takes, in the exported graph's input order
TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
#: largest ONNX Runtime vs PyTorch difference accepted, relative to the largest output (at least 1)
TOKEN_TOLERANCE = 1e-4


def is_token_batch(inputs: object) -> bool:
    """Whether ``inputs`` is a mapping with ``input_ids`` (a tokenizer's output)."""
    return isinstance(inputs, Mapping) and "input_ids" in inputs


def check_token_batch(inputs: object, what: str = "inputs") -> dict[str, torch.Tensor]:
    """The batch's token tensors in ``TOKEN_INPUTS`` order, or a one-line ``ConfigError``."""
    if not is_token_batch(inputs):
        raise ConfigError(f"{what} must be a tokenizer's batch ({{'input_ids': ..., 'attention_mask': ...}}), got "
                          f"{type(inputs).__name__}")
    unknown = sorted(set(inputs) - set(TOKEN_INPUTS))
    if unknown:
        raise ConfigError(f"{what} hold {unknown}; a token model's ONNX file takes only {list(TOKEN_INPUTS)}")
    batch = {name: inputs[name] for name in TOKEN_INPUTS if name in inputs}
    ids = batch["input_ids"]
    for name, tensor in batch.items():
        if not isinstance(tensor, torch.Tensor) or tensor.is_floating_point() or tensor.dim() != 2 \
                or tensor.shape != ids.shape:
            got = f"{getattr(tensor, 'dtype', type(tensor).__name__)} {tuple(getattr(tensor, 'shape', ()))}"
            raise ConfigError(f"{what}[{name!r}] must be an integer tensor (batch, sequence) shaped like "
                              f"input_ids {tuple(getattr(ids, 'shape', ()))}, got {got}")
    if "attention_mask" not in batch:
        batch["attention_mask"] = torch.ones_like(ids)
        batch = {name: batch[name] for name in TOKEN_INPUTS if name in batch}
    return batch


def output_field(model: nn.Module, batch: dict[str, torch.Tensor]) -> str:
    """The ``ModelOutput`` field the export returns (``logits``, else ``last_hidden_state``)."""
    try:
        with torch.no_grad():
            outputs = model.eval()(**{k: v[:1] for k, v in batch.items()}, **_no_cache(model))
    except (RuntimeError, TypeError, ValueError, IndexError) as error:
        raise ConfigError(f"the model does not take these token inputs ({one_line(error)})") from None
    if isinstance(outputs, Mapping):
        for key in MAIN_OUTPUT_KEYS:
            if isinstance(outputs.get(key), torch.Tensor):
                return key
    raise ConfigError(f"the model returns {type(outputs).__name__}, not a ModelOutput with "
                      f"{' or '.join(MAIN_OUTPUT_KEYS)}; a token model's export needs one of them")


def _no_cache(model: nn.Module) -> dict:
    config = getattr(model, "config", None)
    return {"use_cache": False} if getattr(config, "use_cache", None) is not None else {}


class TokenGraph(nn.Module):
    """``model``'s ``field`` output on positional token tensors (``names`` says which), as
    ``torch.export`` captures a model: tensors in, one tensor out."""

    def __init__(self, model: nn.Module, field: str, names: tuple[str, ...]) -> None:
        super().__init__()
        self.model, self.field, self.names = model, field, names

    def forward(self, *tokens: torch.Tensor) -> torch.Tensor:
        return getattr(self.model(**dict(zip(self.names, tokens, strict=True)), **_no_cache(self.model)), self.field)


def token_feed(session, batch: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """The ONNX Runtime feed of a token batch: the tensors the session takes, as int64 arrays."""
    return {i.name: batch[i.name].to(torch.int64).numpy() for i in session.get_inputs()}


def relative_difference(got: np.ndarray, expected: np.ndarray) -> float:
    """Largest absolute difference over the largest absolute expected value (at least 1)."""
    return float(np.abs(got - expected).max() / max(1.0, float(np.abs(expected).max())))


def export_token_model(model: nn.Module, path: str | os.PathLike, inputs: Mapping[str, torch.Tensor],
                       opset: int | None = None) -> float:
    """Export a Hugging Face token model to ONNX at ``path`` (dynamic batch and sequence) and return
    ONNX Runtime's largest difference from PyTorch on ``inputs`` relative to the largest output;
    more than ``TOKEN_TOLERANCE`` is an error and ``path`` is written only when the check passes."""
    from netshrink.quant.onnx_export import _quiet, export_failure, replace_when_close

    batch = check_token_batch(inputs)
    model = model.eval()
    field = output_field(model, batch)
    names = tuple(batch)
    sample = tuple(t[:2] if len(t) >= 2 else t.repeat(2, 1) for t in batch.values())
    if sample[0].shape[1] < 2:
        sample = tuple(t.repeat(1, 2) for t in sample)  # a dynamic axis is captured from a size >= 2
    batch_dim, sequence_dim = torch.export.Dim("batch", min=1), torch.export.Dim("sequence", min=1)
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial")
    try:
        try:
            with _quiet(), torch.no_grad():
                torch.onnx.export(TokenGraph(model, field, names), sample, str(partial), dynamo=True,
                                  input_names=list(names), output_names=[field], opset_version=opset,
                                  dynamic_shapes=(tuple({0: batch_dim, 1: sequence_dim} for _ in names),),  # *tokens
                                  external_data=False, verbose=False)
        except Exception as error:  # noqa: BLE001 (the exporter raises many types; the user gets one line)
            raise export_failure(error, type(model).__name__) from None
        with torch.no_grad():
            expected = getattr(model(**batch, **_no_cache(model)), field).numpy()
        return replace_when_close(partial, path, batch, expected, TOKEN_TOLERANCE, relative=True)
    finally:
        partial.unlink(missing_ok=True)
