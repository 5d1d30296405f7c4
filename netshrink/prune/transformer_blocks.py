"""Module-level rules for the attention blocks and MLPs of Hugging Face transformers, without torch.fx.

A block is found by the names of its Linear children, as the Hugging Face families spell them:

- BERT-family encoders (BERT, RoBERTa, MiniLM...): ``BertAttention`` holds ``self.query/key/value``
  and ``output.dense``; a ``BertLayer`` holds ``intermediate.dense`` (up) and ``output.dense`` (down).
- Llama-family decoders (Llama, Mistral, Qwen2, SmolLM...): the attention holds ``q_proj``,
  ``k_proj``, ``v_proj``, ``o_proj`` with grouped-query attention (query head ``h`` reads key-value
  head ``h // num_key_value_groups``); the MLP holds ``gate_proj``, ``up_proj``, ``down_proj``.

Heads are removed with ``transformers.pytorch_utils.prune_linear_layer`` (Q/K/V output rows, O input
columns) and the attributes the transformers 5.x forward reads are updated (BERT:
``num_attention_heads``, ``all_head_size``; Llama: ``num_key_value_groups``, which the eager and
SDPA attention functions read; both reshape with ``-1`` heads). A grouped-query layer keeps the same
number of query heads in every kept key-value group, so ``num_key_value_groups`` stays one integer.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

#: the attention and MLP families: (kind, the Linear children that make the block)
ATTENTION_KINDS = {"bert": ("self.query", "self.key", "self.value", "output.dense"),
                   "llama": ("q_proj", "k_proj", "v_proj", "o_proj")}
MLP_KINDS = {"bert": ("intermediate.dense", "output.dense"), "llama": ("gate_proj", "up_proj", "down_proj")}


@dataclasses.dataclass(frozen=True)
class AttentionBlock:
    """One attention block: its module name, family, query heads, key-value heads and head size."""

    name: str
    kind: str
    heads: int
    kv_heads: int
    head_dim: int

    @property
    def group(self) -> int:
        """Query heads per key-value head."""
        return self.heads // self.kv_heads


@dataclasses.dataclass(frozen=True)
class MlpBlock:
    """One MLP: its module name, family and hidden neurons."""

    name: str
    kind: str
    neurons: int


def _has_linears(module: nn.Module, paths: tuple[str, ...]) -> bool:
    try:
        return all(isinstance(module.get_submodule(p), nn.Linear) for p in paths)
    except AttributeError:
        return False


def attention_kind(module: nn.Module) -> str | None:
    """The family of an attention block (``"bert"`` or ``"llama"``), or None."""
    for kind, paths in ATTENTION_KINDS.items():
        if _has_linears(module, paths):
            return kind
    return None


def mlp_kind(module: nn.Module) -> str | None:
    """The family of an MLP (``"bert"`` for a whole ``BertLayer``, ``"llama"``), or None."""
    for kind, paths in MLP_KINDS.items():
        if _has_linears(module, paths) and (kind != "bert" or attention_kind(module) is None):
            return kind
    return None


def attention_block(name: str, module: nn.Module) -> AttentionBlock | None:
    """``module`` as an ``AttentionBlock`` (its current head counts), or None."""
    kind = attention_kind(module)
    if kind == "bert":
        inner = module.self
        return AttentionBlock(name, kind, inner.num_attention_heads, inner.num_attention_heads,
                              inner.attention_head_size)
    if kind == "llama":
        heads = module.q_proj.out_features // module.head_dim
        return AttentionBlock(name, kind, heads, heads // module.num_key_value_groups, module.head_dim)
    return None


def mlp_block(name: str, module: nn.Module) -> MlpBlock | None:
    kind = mlp_kind(module)
    if kind is None:
        return None
    return MlpBlock(name, kind, module.get_submodule(MLP_KINDS[kind][-1]).in_features)


def attention_blocks(model: nn.Module) -> list[AttentionBlock]:
    """Every attention block of ``model``, in module order (index ``i`` is layer ``i``)."""
    return [b for name, m in model.named_modules() if (b := attention_block(name, m)) is not None]


def mlp_blocks(model: nn.Module) -> list[MlpBlock]:
    """Every MLP of ``model``, in module order."""
    return [b for name, m in model.named_modules() if (b := mlp_block(name, m)) is not None]


def _prune(parent: nn.Module, path: str, keep: torch.Tensor, dim: int) -> None:
    """Replace the Linear at ``path`` with its ``keep`` rows (``dim=0``) or columns (``dim=1``),
    through ``prune_linear_layer``, in the layer's dtype."""
    from transformers.pytorch_utils import prune_linear_layer

    owner_path, _, attribute = path.rpartition(".")
    owner = parent.get_submodule(owner_path) if owner_path else parent
    old = getattr(owner, attribute)
    setattr(owner, attribute, prune_linear_layer(old, keep, dim=dim).to(old.weight.dtype))


def _rows(heads: torch.Tensor, head_dim: int) -> torch.Tensor:
    """The output rows of a projection that hold ``heads``."""
    return (heads[:, None] * head_dim + torch.arange(head_dim)).flatten()


def remove_heads_(module: nn.Module, keep_query: torch.Tensor, keep_kv: torch.Tensor) -> None:
    """Keep query heads ``keep_query`` and key-value heads ``keep_kv`` (sorted indices) of the
    attention ``module``. For grouped-query attention, ``keep_query`` must hold the same number of
    heads of each kept key-value head's group, and only of those groups."""
    block = attention_block("", module)
    keep_query = torch.sort(keep_query).values
    keep_kv = torch.sort(keep_kv).values
    if block.kind == "bert":
        rows = _rows(keep_query, block.head_dim)
        for path in ("self.query", "self.key", "self.value"):
            _prune(module, path, rows, 0)
        _prune(module, "output.dense", rows, 1)
        module.self.num_attention_heads = len(keep_query)
        module.self.all_head_size = len(keep_query) * block.head_dim
        return
    per_group = len(keep_query) // len(keep_kv)
    for path, heads in (("q_proj", keep_query), ("k_proj", keep_kv), ("v_proj", keep_kv)):
        _prune(module, path, _rows(heads, block.head_dim), 0)
    _prune(module, "o_proj", _rows(keep_query, block.head_dim), 1)
    module.num_key_value_groups = per_group


def remove_neurons_(module: nn.Module, keep: torch.Tensor) -> None:
    """Keep the MLP hidden neurons ``keep`` of ``module`` (up/gate rows, down columns)."""
    kind = mlp_kind(module)
    *producers, consumer = MLP_KINDS[kind]
    keep = torch.sort(keep).values
    for path in producers:
        _prune(module, path, keep, 0)
    _prune(module, consumer, keep, 1)
    if hasattr(module, "intermediate_size"):
        module.intermediate_size = len(keep)


def grouped_heads(block: AttentionBlock, kv_heads: int, per_group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``kv_heads`` key-value heads and the first ``per_group`` query heads of each of
    their groups: the layout a logged ``(heads, kv_heads)`` count rebuilds to."""
    keep_kv = torch.arange(kv_heads)
    keep_query = (keep_kv[:, None] * block.group + torch.arange(per_group)).flatten()
    return keep_query, keep_kv
