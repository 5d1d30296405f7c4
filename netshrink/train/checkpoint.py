"""Checkpoints and weight files as safetensors: nothing is unpickled on load.

A checkpoint holds tensors under prefixed names and one JSON document in the safetensors string
metadata (key ``netshrink``)::

    model.<name>          every entry of the model's state dict
    optim.<i>.<key>       optimizer state tensors of parameter i (momentum, exp_avg, step, ...)
    <extra key>           tensors the caller adds (``fit`` stores RNG states as ``rng.*`` uint8)

    {"format": "netshrink-checkpoint", "version": 1, "arch": {"name", "kwargs"} | null,
     "transform_log": [...], "optimizer": {"type", "param_groups", "state_scalars"} | null,
     "scheduler": {...} | null, ...the caller's JSON extras (epoch, fit_config, history)}

A model file (``save_model``, the baseline weights) holds the plain state dict and
``{"format": "netshrink-model", "version": 1, "arch", "transform_log"}``. Files are written to a
temporary name in the same folder, flushed to disk, then renamed over the target, so a crash
mid-write leaves the previous file intact.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes
from torch import nn

from netshrink.core.errors import ConfigError, NetshrinkFormatError, one_line
from netshrink.core.files import write_atomically
from netshrink.core.transform_log import get_arch, get_log, set_log

CHECKPOINT_FORMAT = "netshrink-checkpoint"
MODEL_FORMAT = "netshrink-model"
FORMAT_VERSION = 1
META_KEY = "netshrink"
_RESERVED = ("model.", "optim.")


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside a DistributedDataParallel (or DataParallel) wrapper."""
    return model.module if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else model


def _cpu_copy(tensor: torch.Tensor) -> torch.Tensor:
    # a private contiguous copy: safetensors refuses tensors that share storage (tied weights)
    return tensor.detach().to("cpu", copy=True).contiguous()


def _write_atomic(path: Path, tensors: dict[str, torch.Tensor], doc: dict[str, Any]) -> None:
    write_atomically(path, safetensors_bytes(tensors, metadata={META_KEY: json.dumps(doc)}))


def _model_doc(model: nn.Module, fmt: str) -> dict[str, Any]:
    model = unwrap(model)
    return {"format": fmt, "version": FORMAT_VERSION, "arch": get_arch(model),
            "transform_log": get_log(model)}


def _json_value(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.item()
    return value


def save_checkpoint(path: str | os.PathLike, model: nn.Module,
                    optimizer: torch.optim.Optimizer | None = None,
                    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
                    extra: dict[str, Any] | None = None) -> None:
    """Write model, optimizer and scheduler state plus ``extra`` atomically to ``path``.

    ``extra`` values that are tensors are stored as tensors under their own key (they must not
    start with ``model.`` or ``optim.``); every other value must be JSON-serialisable and goes
    into the metadata document.
    """
    tensors = {f"model.{k}": _cpu_copy(v) for k, v in unwrap(model).state_dict().items()}
    doc = _model_doc(model, CHECKPOINT_FORMAT)
    doc["optimizer"] = doc["scheduler"] = None
    if optimizer is not None:
        state = optimizer.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for index, entry in state["state"].items():
            for key, value in entry.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optim.{index}.{key}"] = _cpu_copy(value)
                else:
                    scalars.setdefault(str(index), {})[key] = value
        doc["optimizer"] = {"type": type(optimizer).__name__, "state_scalars": scalars,
                            "param_groups": _json_value(state["param_groups"])}
    if scheduler is not None:
        doc["scheduler"] = {k: _json_value(v) for k, v in scheduler.state_dict().items()
                            if k != "lr_lambdas"}
    for key, value in (extra or {}).items():
        if isinstance(value, torch.Tensor):
            if key.startswith(_RESERVED):
                raise ValueError(f"extra tensor key {key!r} collides with a reserved prefix {_RESERVED}")
            tensors[key] = _cpu_copy(value)
        elif key in doc:
            raise ValueError(f"extra key {key!r} collides with a checkpoint field")
        else:
            doc[key] = value
    _write_atomic(Path(path), tensors, doc)


def save_model(path: str | os.PathLike, model: nn.Module) -> None:
    """Write the plain state dict plus architecture and transform log (the baseline weights file)."""
    tensors = {k: _cpu_copy(v) for k, v in unwrap(model).state_dict().items()}
    _write_atomic(Path(path), tensors, _model_doc(model, MODEL_FORMAT))


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(tensors, meta)`` of a checkpoint or model file; ``NetshrinkFormatError`` if malformed."""
    path = Path(path)
    if not path.is_file():
        raise NetshrinkFormatError(f"{path} does not exist; give a netshrink checkpoint or model file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = (handle.metadata() or {}).get(META_KEY)
            names = handle.keys()
            tensors = {key: handle.get_tensor(key) for key in names}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise NetshrinkFormatError(f"{path} is not a valid safetensors file ({reason})") from None
    if raw is None:
        raise NetshrinkFormatError(f"{path} has no netshrink metadata; it was not written by netshrink")
    try:
        meta = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
        raise NetshrinkFormatError(f"{path} has malformed metadata JSON ({reason})") from None
    if not isinstance(meta, dict) or meta.get("format") not in (CHECKPOINT_FORMAT, MODEL_FORMAT):
        raise NetshrinkFormatError(f"{path} is not a netshrink checkpoint or model file")
    if meta.get("version") != FORMAT_VERSION:
        raise NetshrinkFormatError(f"{path} has format version {meta.get('version')!r}; this netshrink "
                                   f"reads version {FORMAT_VERSION}, upgrade netshrink")
    for key in ("arch", "transform_log"):
        if key not in meta:
            raise NetshrinkFormatError(f"{path} metadata lacks {key!r}")
    return tensors, meta


def model_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The model's state dict out of ``load_checkpoint`` output (checkpoint or model file)."""
    if meta["format"] == MODEL_FORMAT:
        return dict(tensors)
    return {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}


def load_model_state(model: nn.Module, tensors: dict[str, torch.Tensor], meta: dict[str, Any],
                     source: str | os.PathLike) -> None:
    """Load weights into ``model``; a mismatch is a ``NetshrinkFormatError`` naming the keys."""
    try:
        unwrap(model).load_state_dict(model_state(tensors, meta))
    except RuntimeError as exc:
        reason = one_line(exc, 300)
        raise NetshrinkFormatError(f"{source} does not fit this model: {reason}") from None


def load_optimizer_state(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                         meta: dict[str, Any], source: str | os.PathLike) -> None:
    """Restore optimizer state saved by ``save_checkpoint``."""
    doc = meta.get("optimizer")
    if not isinstance(doc, dict) or doc.get("type") != type(optimizer).__name__:
        found = doc.get("type") if isinstance(doc, dict) else None
        raise NetshrinkFormatError(f"{source} holds optimizer state of {found!r}, not "
                                   f"{type(optimizer).__name__}")
    try:
        state: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, index, name = key.split(".", 2)
                state.setdefault(int(index), {})[name] = value
        for index, entries in doc.get("state_scalars", {}).items():
            state.setdefault(int(index), {}).update(entries)
        groups = [{k: v if k == "params" or not isinstance(v, list) else tuple(v) for k, v in group.items()}
                  for group in doc["param_groups"]]
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise NetshrinkFormatError(f"{source} optimizer state is malformed or does not fit: "
                                   f"{type(exc).__name__}: {exc}") from None


def load_model(path: str | os.PathLike) -> nn.Module:
    """Rebuild a zoo model from a checkpoint or model file and load its weights."""
    from netshrink.models import create_matching

    tensors, meta = load_checkpoint(path)
    arch = meta["arch"]
    if not isinstance(arch, dict) or not isinstance(arch.get("name"), str):
        raise NetshrinkFormatError(f"{path} does not name a zoo architecture (the model is a user "
                                   "class); build the model yourself and load the weights into it")
    state = model_state(tensors, meta)
    log = meta["transform_log"]
    if not isinstance(log, list):
        raise NetshrinkFormatError(f"{path}: transform_log must be a list")
    try:
        model = create_matching(arch["name"], arch.get("kwargs", {}),
                                {key: tuple(t.shape) for key, t in state.items()}, log)
    except ConfigError as exc:
        raise NetshrinkFormatError(f"{path}: {exc}") from None
    load_model_state(model, tensors, meta, path)
    set_log(model, log)
    return model
