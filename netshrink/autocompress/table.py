"""The per-layer table: each candidate's sensitivity and cost, one layer changed at a time.

Sensitivity (HAWQ-V3's per-layer sensitivity, Yao et al. 2021, sec. 3, measured instead of
approximated by a Hessian): the mean KL divergence of the model's outputs from the original's on
calibration samples (validation inputs) when that layer alone takes the candidate, untrained; the
accuracy on the same samples is kept beside it. Label-free, so it also serves unlabeled data.
Cost: what the candidate changes in the constrained quantity, on the model with only that
change: file bytes from the real encoders (``codec.tensor_encodings.encode_tensor`` of every
tensor the change touches, as ``save`` stores it, less the original's), dense MACs
(``measure.macs``), or batch-1 latency on this CPU, one thread. The allocation assumes these
add up across layers (HAQ, Wang et al. 2019, sec. 3.3; HAWQ-V3 sec. 3.4); every allocation is
then sized for real (``search``) before it is trained. A text encoder's rows are measured by
fidelity instead (``text``: cosine of sentence embeddings, bytes as ``save`` encodes them).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from typing import Any

import torch
from torch import nn

from netshrink.autocompress.choices import Choice
from netshrink.autocompress.plan import NO_TRAINING, Recovery, apply_untrained, stages_for

#: encodings tried for a layer's weight after each family (their cheapest is what ``save`` picks
#: among them; trying every encoding costs seconds per large tensor)
PREFERRED_CHAINS = {"cluster": ("codebook", "sparse+codebook"), "int": ("int", "sparse+int")}
LATENCY_REPEATS = 30


@dataclasses.dataclass(frozen=True)
class Setting:
    """What the table of one search is measured on: the original (its file's SHA-256; the file is
    the ``[model]`` table's checkpoint), its data, the budget's kind and the number of calibration
    samples. Picklable: a worker process rebuilds its context from it."""

    original_sha256: str
    model_table: tuple[tuple[str, str], ...]
    data_table: tuple[tuple[str, Any], ...]
    kind: str
    samples: int
    space: Any = None  # a text encoder's ``text.TextSpace``; None for labelled data
    #: a latency search's original batch-1 ms, measured once (``search/original.json``): every
    #: process scales its interleaved ratios (``latency_of``) by this one figure
    latency_ms: float = 0.0
    runtime: str = "torch"  # where a latency search times its models (``Budget.runtime``)


@dataclasses.dataclass
class Context:
    """The original model and its measurements, shared by every candidate of a search."""

    model: nn.Module
    data: Any
    x: torch.Tensor
    y: torch.Tensor
    reference: torch.Tensor  # log-probabilities of the original on x
    accuracy: float
    kind: str
    tensor_bytes: dict[str, int]
    macs: int
    latency_ms: float
    text: Any = None  # a text encoder's ``text.TextTask`` (then ``reference`` holds embeddings, ``y`` None)
    meter: Any = None  # a latency search's ``timing.LatencyMeter``


def load_original(setting: Setting) -> tuple[nn.Module, Any]:
    """The original model (as the recipes' baseline stage loads it) and the data set."""
    from netshrink.data import load_dataset
    from netshrink.pipeline.recipe import parse_recipe
    from netshrink.pipeline.run import build_model

    data_table = dict(setting.data_table)
    data = load_dataset(data_table["name"], data_dir=data_table.get("dir"),
                        val_fraction=data_table.get("val_fraction", 0.1))
    recipe = parse_recipe({"model": dict(setting.model_table), "data": data_table,
                           "stages": [{"verb": "magnitude_prune", "config": {"sparsity": 0.0}}]})
    return build_model(recipe, data).eval(), data


@functools.lru_cache(maxsize=2)
def context(setting: Setting) -> Context:
    """The search's ``Context`` (cached per process: a worker builds it once)."""
    from netshrink.autocompress.timing import LatencyMeter
    from netshrink.measure import count_macs

    if "pretrained" in dict(setting.model_table):
        from netshrink.autocompress.text import text_context

        return text_context(setting)
    model, data = load_original(setting)
    x, y = data.val.x[:setting.samples], data.val.y[:setting.samples]
    reference = _log_probs(model, x)
    accuracy = float((reference.argmax(-1) == y).float().mean())
    sizes = {name: encoded_bytes(t, effort="default") for name, t in model.state_dict().items()} \
        if setting.kind == "bytes" else {}
    meter = LatencyMeter(model, x, setting.runtime, LATENCY_REPEATS) if setting.kind == "latency_ms" else None
    latency = (setting.latency_ms or meter.original_ms()) if meter is not None else 0.0
    return Context(model, data, x, y, reference, accuracy, setting.kind, sizes,
                   count_macs(model, data.input_shape), latency, meter=meter)


@torch.no_grad()
def _log_probs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    from netshrink.measure import predict_logits

    return torch.log_softmax(predict_logits(model.eval(), x).float(), dim=-1)


def encoded_bytes(tensor: torch.Tensor, chains: tuple[str, ...] = (), effort: str = "max") -> int:
    """Bytes the .nsk file spends on ``tensor``: its cheapest exact encoding among ``chains``, or,
    when empty, the one ``save`` picks at ``effort`` (the original file is saved at the default
    effort, which stores a large dense fp32 tensor raw), with ``-0.0`` stored as ``+0.0`` as
    ``save`` does by default."""
    from netshrink.codec.tensor_encodings import encode_tensor

    tensor = tensor.detach().cpu().contiguous()
    if tensor.is_floating_point():
        tensor = torch.where(tensor == 0, torch.zeros_like(tensor), tensor)
    if not chains:
        return encode_tensor(tensor, effort=effort).cost()
    return min(encode_tensor(tensor, prefer=chain, effort=effort).cost() for chain in chains)


def stages_of(ctx: Context, allocation: dict[str, Choice], recovery: Recovery = NO_TRAINING) -> list[dict[str, Any]]:
    """The recipe stages of ``allocation``: a text encoder's (``text.TextTask.stages``, no
    training) or ``plan.stages_for``'s with ``recovery``."""
    return ctx.text.stages(allocation) if ctx.text is not None else stages_for(allocation, recovery)


def apply_allocation(ctx: Context, allocation: dict[str, Choice]) -> nn.Module:
    """A copy of the original with ``allocation`` applied untrained (a text encoder's stages
    calibrated on the table's passages)."""
    calibration = ctx.x if ctx.text is not None else None
    return apply_untrained(copy.deepcopy(ctx.model), stages_of(ctx, allocation), ctx.data, calibration).eval()


def measure_choice(ctx: Context, layer: str, choice: Choice) -> dict[str, Any]:
    """One row of the table: ``choice`` on ``layer`` alone, untrained."""
    if ctx.text is not None:
        from netshrink.autocompress.text import measure_choice as measure_text_choice

        return measure_text_choice(ctx, layer, choice)
    trial = apply_allocation(ctx, {layer: choice})
    log_probs = _log_probs(trial, ctx.x)
    kl = float((ctx.reference.exp() * (ctx.reference - log_probs)).sum(-1).mean())
    accuracy = float((log_probs.argmax(-1) == ctx.y).float().mean())
    return {"choice": choice.to_dict(), "kl": max(kl, 0.0), "accuracy": accuracy, "cost": _cost(ctx, trial, choice)}


def _cost(ctx: Context, trial: nn.Module, choice: Choice) -> float:
    if ctx.kind == "macs":
        from netshrink.measure import count_macs

        return float(count_macs(trial, ctx.data.input_shape) - ctx.macs)
    if ctx.kind == "latency_ms":
        return latency_of(ctx, trial) - ctx.latency_ms
    return changed_bytes(ctx, trial, choice)


def latency_of(ctx: Context, model: nn.Module) -> float:
    """``model``'s batch-1 ms (one thread, in the search's runtime). In a latency search: the
    original's ``ctx.latency_ms`` times their ratio timed interleaved (``timing.LatencyMeter``), so
    a cost measured while other processes load the CPU is the one measured on a quiet one, and
    every process of a search shares one scale. In a size or MACs search, where latency is only
    recorded: the median of ``LATENCY_REPEATS`` PyTorch runs on the calibration samples."""
    if ctx.meter is None:
        from netshrink.measure.latency import measure_latency

        return measure_latency(model, ctx.data.input_shape, 1, 1, repeats=LATENCY_REPEATS, inputs=ctx.x)["median_ms"]
    return ctx.latency_ms * ctx.meter.ratio(model)


def changed_bytes(ctx: Context, trial: nn.Module, choice: Choice) -> float:
    """The file bytes ``trial`` spends beyond the original, over the tensors it changed: each in
    ``PREFERRED_CHAINS``' encodings of its family, or for a text encoder in the encoding ``save``
    gives it (``Technique.stored_as`` first, its default effort)."""
    from netshrink.core.registry import stored_encodings
    from netshrink.core.transform_log import get_log

    original = ctx.model.state_dict()
    now = trial.state_dict()
    requested = stored_encodings(trial, get_log(trial)) if ctx.text is not None else {}
    delta = -sum(size for name, size in ctx.tensor_bytes.items() if name not in now)
    for name, tensor in now.items():
        before = original.get(name)
        if before is not None and before.shape == tensor.shape and torch.equal(before, tensor):
            continue
        if ctx.text is not None:
            size = encoded_bytes(tensor, (requested[name],) if name in requested else (), effort="default")
        else:
            size = encoded_bytes(tensor, PREFERRED_CHAINS.get(choice.values, ()) if name.endswith("weight") else ())
        delta += size - ctx.tensor_bytes.get(name, 0)
    return float(delta)


def measure_layer(setting: Setting, layer: str, choices: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every row of ``layer`` (a worker process's job: everything it needs is picklable)."""
    ctx = context(setting)
    found = [Choice.from_dict(c) for c in choices]
    if ctx.text is not None:  # an Embedding's candidates are not a Linear's
        found = [c for c in found if ctx.text.applies(layer, c)]
    return [measure_choice(ctx, layer, c) for c in found]
