"""How many heads and neurons each layer keeps under a FLOPs budget: Kwon et al. 2022, "A Fast
Post-Training Pruning Framework for Transformers", sec. 4.1 (Algorithm 1, the mask search).

The units are a layer's removable pieces with their importance and their cost in multiply-adds for
a sequence of ``T`` tokens: a head costs ``(2 q + 2 kv) d d_h T`` in its projections plus
``2 q T^2 d_h`` in attention (``q`` query and ``kv`` key-value heads in the unit; a BERT head is
``q = kv = 1``, a ``per_group`` unit of grouped-query attention one query head of every group and no
key-value head, a ``groups`` unit one key-value head and its query heads), a neuron ``m d T`` (``m``
= 2 matrices in BERT's MLP, 3 in Llama's). Algorithm 1: for every number ``n`` of heads kept (the
most important first), the rest of the budget keeps the most important neurons it can pay for;
the ``n`` with the largest summed importance wins. Each layer's most important head unit and
neuron always stay (our surgery keeps at least one of each). Hand-written: no library does this
search.
"""

from __future__ import annotations

import torch

from netshrink.core.errors import ConfigError
from netshrink.prune.transformer_blocks import MLP_KINDS, AttentionBlock, MlpBlock


def _head_units(block: AttentionBlock, scores: dict, gqa: str, hidden: int, sequence: int):
    """``(importances sorted high to low, unit cost, query heads per unit)`` of one attention block."""
    if block.group == 1:
        importances, query, kv = scores["heads"], 1, 1
    elif gqa == "groups":
        importances, query, kv = scores["groups"], block.group, 1
    else:  # the j-th most important head of every group together
        importances = scores["heads"].reshape(block.kv_heads, block.group).sort(1, descending=True).values.sum(0)
        query, kv = block.kv_heads, 0
    cost = (2 * query + 2 * kv) * hidden * block.head_dim * sequence + 2 * query * sequence ** 2 * block.head_dim
    return importances.sort(descending=True).values, cost, query


def total_cost(attention: list[AttentionBlock], mlps: list[MlpBlock], hidden: dict[str, int], sequence: int) -> int:
    """Multiply-adds of every head and neuron of the blocks (what the budget is a fraction of)."""
    heads = sum((2 * b.heads + 2 * b.kv_heads) * hidden[b.name] * b.head_dim * sequence
                + 2 * b.heads * sequence ** 2 * b.head_dim for b in attention)
    return heads + sum(len(MLP_KINDS[b.kind]) * hidden[b.name] * sequence * b.neurons for b in mlps)


def plan_counts(attention: list[AttentionBlock], mlps: list[MlpBlock], scores: dict[str, dict], hidden: dict[str, int],
                budget: float, gqa: str, sequence: int) -> tuple[dict[str, int], dict[str, int], float]:
    """Query heads and neurons to remove from each block to keep ``budget`` of their multiply-adds,
    and the fraction really kept."""
    total = total_cost(attention, mlps, hidden, sequence)
    fixed = sum(b.kv_heads * 2 * hidden[b.name] * b.head_dim * sequence for b in attention
                if b.group > 1 and gqa == "per_group")  # key-value heads a per_group search never removes
    optional: list[tuple[float, int, str, int]] = []  # (importance, cost, block, query heads)
    for block in attention:
        importances, cost, query = _head_units(block, scores[block.name], gqa, hidden[block.name], sequence)
        fixed += cost
        optional += [(float(i), cost, block.name, query) for i in importances[1:]]
    neurons: list[tuple[float, int, str, int]] = []
    for block in mlps:
        cost = len(MLP_KINDS[block.kind]) * hidden[block.name] * sequence
        importances = scores[block.name]["neurons"].sort(descending=True).values
        fixed += cost
        neurons += [(float(i), cost, block.name, 1) for i in importances[1:]]
    room = budget * total - fixed
    if room < 0:
        raise ConfigError(f"flops={budget} cannot be reached: one head unit and one neuron per layer already cost "
                          f"{fixed / total:.3f} of the attention and MLP FLOPs; give at least that")
    optional.sort(key=lambda u: -u[0])
    neurons.sort(key=lambda u: -u[0])
    head_cost = torch.tensor([0] + [u[1] for u in optional], dtype=torch.float64).cumsum(0)
    head_gain = torch.tensor([0.0] + [u[0] for u in optional], dtype=torch.float64).cumsum(0)
    neuron_cost = torch.tensor([0] + [u[1] for u in neurons], dtype=torch.float64).cumsum(0)
    neuron_gain = torch.tensor([0.0] + [u[0] for u in neurons], dtype=torch.float64).cumsum(0)
    best, choice = -1.0, (0, 0)
    for kept_heads in range(len(optional) + 1):
        left = room - float(head_cost[kept_heads])
        if left < 0:
            break
        kept_neurons = int(torch.searchsorted(neuron_cost, torch.tensor(left, dtype=torch.float64), right=True)) - 1
        gain = float(head_gain[kept_heads] + neuron_gain[kept_neurons])
        if gain > best:
            best, choice = gain, (kept_heads, kept_neurons)
    remove_heads = {b.name: 0 for b in attention}
    for _, _, name, query in optional[choice[0]:]:
        remove_heads[name] += query
    remove_neurons = {b.name: 0 for b in mlps}
    for _, _, name, _ in neurons[choice[1]:]:
        remove_neurons[name] += 1
    kept = fixed + float(head_cost[choice[0]]) + float(neuron_cost[choice[1]])
    return remove_heads, remove_neurons, kept / total
