"""Structured pruning of Hugging Face transformers without torch.fx: attention heads and MLP neurons.

``prune_(model, TransformerPrune(heads=0.5, neurons=0.3))`` finds the BERT-family and Llama-family
attention blocks and MLPs by their module names (``transformer_blocks``), ranks heads, key-value
groups and neurons (``head_importance``: weight magnitude, or Michel et al. 2019 sec. 4.1 or Kwon
et al. 2022 sec. 4.1 on calibration data; or a FLOPs budget picks the counts, ``flops_budget``)
and cuts the lowest out with ``transformers.pytorch_utils.prune_linear_layer``, so the model is
physically smaller and still runs under plain ``transformers`` (the tied embedding and output layer
are never touched). Grouped-query attention keeps the same number of query heads per key-value
group: ``gqa="per_group"`` removes heads in equal numbers from every group, ``gqa="groups"``
removes whole key-value groups with their query heads. ``tune=True`` then rescales the kept heads
and neurons by least squares (``mask_tuning``).

The log records each block's new query and key-value head counts and each MLP's neuron count;
the registered rebuilder replays them on a fresh model so ``load`` fills in the weights.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from netshrink.calibration.batches import calibration_batches
from netshrink.core import record_checks
from netshrink.core.config import Config, unlogged
from netshrink.core.errors import ConfigError, NetshrinkFormatError
from netshrink.core.model_io import map_tensors
from netshrink.core.registry import register
from netshrink.prune.flops_budget import plan_counts
from netshrink.prune.head_importance import IMPORTANCES, importance_scores
from netshrink.prune.mask_rearrange import rearranged_removal
from netshrink.prune.mask_tuning import TUNINGS, tune_masks_
from netshrink.prune.selection import check_sparsity
from netshrink.prune.transformer_blocks import (
    ATTENTION_KINDS,
    MLP_KINDS,
    AttentionBlock,
    MlpBlock,
    attention_block,
    attention_blocks,
    grouped_heads,
    mlp_block,
    mlp_blocks,
    remove_heads_,
    remove_neurons_,
)
from netshrink.prune.verb import prune_

GQA_MODES = ("per_group", "groups")

Amount = float | dict[int, int]


def _amount(value: Any, what: str) -> Amount:
    """A fraction in [0, 1), or ``{layer index: how many to remove}`` (JSON's string keys accepted)."""
    if not isinstance(value, dict):
        return check_sparsity(value, what)
    amounts = {}
    for key, count in value.items():
        index = int(key) if isinstance(key, str) and key.isdigit() else key
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise ConfigError(f"{what} keys must be layer indices (0, 1, ...), got {key!r}")
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise ConfigError(f"{what}[{index}] must be how many to remove (an integer >= 0), got {count!r}")
        amounts[index] = count
    return amounts


@dataclasses.dataclass(frozen=True)
class TransformerPrune(Config):
    """Remove attention heads and MLP neurons of a BERT- or Llama-family transformer.

    Args:
        heads: fraction of every layer's query heads to remove, in [0, 1) (rounded down to what the
            grouping allows; one group always stays), or ``{layer index: heads to remove}``.
        neurons: fraction of every MLP's hidden neurons to remove, or ``{layer index: neurons to remove}``.
        gqa: for grouped-query attention, ``"per_group"`` (the same number of query heads from each
            key-value group) or ``"groups"`` (whole key-value groups with their query heads).
        importance: ``"magnitude"`` (weight norms), ``"michel"`` (Michel et al. 2019 head and
            neuron masks' gradients on ``calibration_data``) or ``"fisher"`` (Kwon et al. 2022's
            diagonal Fisher information of the same masks).
        flops: instead of ``heads`` / ``neurons``, the fraction of the attention and MLP FLOPs to
            keep, in (0, 1): Kwon et al. 2022's search picks how many heads and neurons each layer
            keeps (``flops_budget``), for sequences as long as the calibration data's (else 128).
        rearrange: with ``importance="fisher"``, choose which heads and neurons of each layer go by
            Kwon et al. 2022 sec. 4.2's greedy search on the layer's Fisher block
            (``mask_rearrange``) rather than by each one's own score.
        tune: afterwards, rescale the kept heads and neurons by least squares so each pruned
            block reproduces the original's output on ``calibration_data`` (Kwon et al. 2022 sec.
            4.3, ``mask_tuning``; the scales are folded into the weights): ``True`` or
            ``"scales"``; ``"weights"`` solves each block's whole output projection and bias
            instead (ZipLM / FLAP's layer-wise reconstruction); ``False``: no tuning.
        calibration_data: batches of the model's inputs for ``"michel"``, ``"fisher"`` and ``tune``
            (not logged).

    Example:
        >>> prune_(llama, TransformerPrune(heads={0: 2}, neurons=0.3, importance="michel", calibration_data=batch))
    """

    heads: Any = 0.0
    neurons: Any = 0.0
    gqa: str = "per_group"
    importance: str = "magnitude"
    flops: float | None = None
    rearrange: bool = False
    tune: bool | str = False
    calibration_data: Any = unlogged()

    def __post_init__(self) -> None:
        object.__setattr__(self, "heads", _amount(self.heads, "heads"))
        object.__setattr__(self, "neurons", _amount(self.neurons, "neurons"))
        if self.gqa not in GQA_MODES:
            raise ConfigError(f"unknown gqa {self.gqa!r}; choose one of {list(GQA_MODES)}")
        if self.importance not in IMPORTANCES:
            raise ConfigError(f"unknown importance {self.importance!r}; choose one of {list(IMPORTANCES)}")
        if not isinstance(self.rearrange, bool):
            raise ConfigError(f"rearrange must be true or false, got {self.rearrange!r}")
        if not isinstance(self.tune, bool) and self.tune not in TUNINGS:
            raise ConfigError(f"tune must be true, false or one of {list(TUNINGS)}, got {self.tune!r}")
        if self.rearrange and self.importance != "fisher":
            raise ConfigError("rearrange=True needs importance='fisher' (it searches the Fisher information)")
        if self.flops is not None:
            if isinstance(self.flops, bool) or not isinstance(self.flops, (int, float)) or not 0 < self.flops < 1:
                raise ConfigError(f"flops must be the fraction of FLOPs to keep, in (0, 1), got {self.flops!r}")
            if self.heads or self.neurons:
                raise ConfigError("give flops (a budget that picks the heads and neurons) or heads / neurons, not both")


def _unit(block: AttentionBlock, gqa: str) -> int:
    """How many query heads go together: one (BERT, or one query head per group), the number of
    key-value groups (``per_group``: one head from each), or a group's size (``groups``)."""
    if block.group == 1:
        return 1
    return block.kv_heads if gqa == "per_group" else block.group


def _requested(amount: Amount, index: int, size: int, unit: int) -> int:
    """How many of ``size`` to remove from layer ``index``: a fraction rounded down to a multiple of
    ``unit`` keeping at least ``unit``, or the given count."""
    if isinstance(amount, dict):
        return amount.get(index, 0)
    return min(math.floor(amount * size) // unit * unit, size - unit)


def _check_layers(amount: Amount, blocks: list, what: str, model: nn.Module) -> None:
    if isinstance(amount, dict) and amount and max(amount) >= len(blocks):
        raise ConfigError(f"{what} names layer {max(amount)}, but {type(model).__name__} has {len(blocks)} "
                          f"{what[:-1] if what == 'heads' else 'MLP'} layers (0-{len(blocks) - 1})")


def _head_counts(blocks: list[AttentionBlock], config: TransformerPrune) -> dict[str, int]:
    counts = {}
    for index, block in enumerate(blocks):
        unit = _unit(block, config.gqa)
        count = _requested(config.heads, index, block.heads, unit)
        if count % unit:
            how = "from each" if config.gqa == "per_group" else "whole groups of"
            raise ConfigError(f"heads[{index}]={count} does not divide: layer {index} has {block.heads} query heads in "
                              f"{block.kv_heads} key-value groups, so gqa={config.gqa!r} removes a multiple of {unit} "
                              f"({how} {unit if config.gqa == 'groups' else block.kv_heads} ...)")
        if count >= block.heads:
            raise ConfigError(f"heads[{index}]={count} removes every head of layer {index} ({block.heads}); keep at "
                              f"least {unit}, or drop the layer with LayerDrop")
        counts[block.name] = count
    return counts


def _neuron_counts(blocks: list[MlpBlock], config: TransformerPrune) -> dict[str, int]:
    counts = {}
    for index, block in enumerate(blocks):
        count = _requested(config.neurons, index, block.neurons, 1)
        if count >= block.neurons:
            raise ConfigError(f"neurons[{index}]={count} removes every neuron of MLP {index} ({block.neurons}); "
                              "keep at least one")
        counts[block.name] = count
    return counts


def _sequence(data: Any) -> int:
    """The token length of the calibration data's first batch (``input_ids`` or the first tensor's
    second dimension), or 128 without data."""
    if data is None:
        return 128
    batch = calibration_batches(data)[0]
    tensor = batch.get("input_ids") if isinstance(batch, dict) else None
    if tensor is None:
        found: list[torch.Tensor] = []
        map_tensors(batch, found.append)
        tensor = found[0]
    return int(tensor.shape[1]) if tensor.dim() > 1 else 1


def _top(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """The indices of the ``keep`` highest scores, sorted (ties keep the earlier one)."""
    order = torch.sort(-scores, stable=True).indices[:keep]
    return torch.sort(order).values


def _kept(scores: dict, key: str, keep: int, rows: slice = slice(None)) -> torch.Tensor:
    """The ``keep`` units of ``scores[key][rows]`` to keep: the highest scores, or, where per-sample
    gradients are there to rearrange (``rearrange=True``), all but Kwon et al.'s removal set."""
    samples = scores.get(f"{key}_samples")
    if samples is None:
        return _top(scores[key][rows], keep)
    samples = samples[rows]
    removed = set(rearranged_removal(samples, samples.shape[0] - keep).tolist())
    return torch.tensor([i for i in range(samples.shape[0]) if i not in removed], dtype=torch.long)


def _kept_heads(block: AttentionBlock, scores: dict, remove: int, gqa: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The query and key-value heads to keep when ``remove`` query heads go."""
    if _unit(block, gqa) == 1 and block.group == 1:
        keep = _kept(scores, "heads", block.heads - remove)
        return keep, keep
    if gqa == "groups":
        keep_kv = _kept(scores, "groups", block.kv_heads - remove // block.group)
        return (keep_kv[:, None] * block.group + torch.arange(block.group)).flatten(), keep_kv
    per_group = block.group - remove // block.kv_heads
    groups = [slice(g * block.group, (g + 1) * block.group) for g in range(block.kv_heads)]
    keep_query = torch.cat([rows.start + _kept(scores, "heads", per_group, rows) for rows in groups])
    return keep_query, torch.arange(block.kv_heads)


def _rebuild(model: nn.Module, record: dict[str, Any]) -> None:
    """Give a fresh model the logged head and neuron counts (the weights come from the file)."""
    for name, counts in record["attention"].items():
        module = model.get_submodule(name)
        block = attention_block(name, module)
        remove_heads_(module, *grouped_heads(block, counts["kv_heads"], counts["heads"] // counts["kv_heads"]))
    for name, counts in record["mlp"].items():
        remove_neurons_(model.get_submodule(name), torch.arange(counts["neurons"]))


def _check(model: nn.Module, record: dict[str, Any]) -> None:
    """Each logged block is an attention block or MLP of the model, and its counts shrink it and keep
    the same number of query heads in every key-value group."""
    for name, counts in record_checks.mapping(record.get("attention"), "attention").items():
        block = attention_block(name, record_checks.layer(model, name))
        if block is None:
            raise NetshrinkFormatError(f"layer {name[:80]!r} is not a BERT- or Llama-style attention block")
        counts = record_checks.mapping(counts, f"attention {name[:80]!r}")
        kv = record_checks.size(counts.get("kv_heads"), block.kv_heads, f"{name[:80]!r} kv_heads")
        heads = record_checks.size(counts.get("heads"), block.heads, f"{name[:80]!r} heads")
        if heads % kv or heads // kv > block.group or (block.group == 1 and heads != kv):
            raise NetshrinkFormatError(f"{name[:80]!r}: {heads} query heads do not divide into {kv} key-value "
                                       f"groups of at most {block.group}")
    for name, counts in record_checks.mapping(record.get("mlp"), "mlp").items():
        block = mlp_block(name, record_checks.layer(model, name))
        if block is None:
            raise NetshrinkFormatError(f"layer {name[:80]!r} is not a BERT- or Llama-style MLP")
        counts = record_checks.mapping(counts, f"mlp {name[:80]!r}")
        record_checks.size(counts.get("neurons"), block.neurons, f"{name[:80]!r} neurons")


@register(TransformerPrune, "transformer_prune", rebuild=_rebuild, check=_check, structural=True, verb=prune_)
def _transformer_prune(model: nn.Module, config: TransformerPrune) -> dict:
    if any(parametrize.is_parametrized(m) for m in model.modules()):
        raise ConfigError("the model carries masks or other parametrizations; call finalize_(model) before "
                          "transformer pruning")
    attention, mlps = attention_blocks(model), mlp_blocks(model)
    if not attention and not mlps:
        raise ConfigError(f"{type(model).__name__} has no BERT- or Llama-style attention block or MLP "
                          "(query/key/value or q_proj/k_proj/v_proj/o_proj; intermediate/output or "
                          "gate_proj/up_proj/down_proj)")
    _check_layers(config.heads, attention, "heads", model)
    _check_layers(config.neurons, mlps, "neurons", model)
    if config.tune and config.calibration_data is None:
        raise ConfigError(f"tune={config.tune!r} needs calibration_data (a few batches of the model's inputs)")
    details: dict[str, Any] = {"attention": {}, "mlp": {}}
    if config.flops is None:
        heads, neurons = _head_counts(attention, config), _neuron_counts(mlps, config)
        if not any(heads.values()) and not any(neurons.values()):
            raise ConfigError(f"heads={config.heads} and neurons={config.neurons} remove nothing from "
                              f"{type(model).__name__} (counts round down to whole key-value groupings); ask for more")
        scores = importance_scores(model, [b for b in attention if heads[b.name]],
                                   [b for b in mlps if neurons[b.name]], config.importance, config.calibration_data)
    else:
        scores = importance_scores(model, attention, mlps, config.importance, config.calibration_data)
        hidden = {b.name: model.get_submodule(b.name).get_submodule(ATTENTION_KINDS[b.kind][-1]).out_features
                  for b in attention}
        hidden |= {b.name: model.get_submodule(b.name).get_submodule(MLP_KINDS[b.kind][-1]).out_features for b in mlps}
        sequence = _sequence(config.calibration_data)
        heads, neurons, kept = plan_counts(attention, mlps, scores, hidden, config.flops, config.gqa, sequence)
        details |= {"flops_kept": round(kept, 4), "sequence": sequence}
    if not config.rearrange:  # the per-sample gradients are for the rearrangement only
        for block_scores in scores.values():
            for key in [k for k in block_scores if k.endswith("_samples")]:
                del block_scores[key]
    original = copy.deepcopy(model) if config.tune else None
    for block in attention:
        if heads[block.name]:
            keep_query, keep_kv = _kept_heads(block, scores[block.name], heads[block.name], config.gqa)
            remove_heads_(model.get_submodule(block.name), keep_query, keep_kv)
            details["attention"][block.name] = {"heads": len(keep_query), "kv_heads": len(keep_kv),
                                                "kept": keep_query.tolist()}
    for block in mlps:
        if neurons[block.name]:
            keep = _kept(scores[block.name], "neurons", block.neurons - neurons[block.name])
            remove_neurons_(model.get_submodule(block.name), keep)
            details["mlp"][block.name] = {"neurons": len(keep)}
    if original is not None:
        changed = {*details["attention"], *details["mlp"]}
        tune_masks_(model, original, [name for name, _ in model.named_modules() if name in changed],
                    config.calibration_data, "scales" if config.tune is True else config.tune)
    return details
