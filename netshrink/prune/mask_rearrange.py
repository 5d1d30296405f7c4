"""Which heads or neurons of a layer to remove, given how many: Kwon et al. 2022, "A Fast
Post-Training Pruning Framework for Transformers", sec. 4.2 (Fisher-based mask rearrangement).

The diagonal Fisher scores each unit alone; within a layer, removing a set ``P`` costs, to second
order, ``sum over samples (sum_{i in P} g_i)^2`` (the layer's block of the empirical Fisher, with
``g_i`` unit ``i``'s per-sample mask gradients), so units whose gradients cancel can go together.
The greedy search of the paper: start from the ``count`` units of lowest diagonal Fisher; take the
others in increasing order, add each to the set and drop the member whose removal leaves the
smallest ``||sum g||^2``. Hand-written: no library does this search.
"""

from __future__ import annotations

import torch


def rearranged_removal(gradients: torch.Tensor, count: int) -> torch.Tensor:
    """The indices of the ``count`` units to remove, from their per-sample mask gradients
    ``(units, samples)`` (sorted)."""
    units = gradients.shape[0]
    if count <= 0 or count >= units:
        return torch.arange(units)[:max(count, 0)]
    gradients = gradients.double()
    order = gradients.pow(2).sum(1).argsort(stable=True).tolist()
    removed = order[:count]
    for index in order[count:]:
        removed.append(index)
        vectors = gradients[removed]
        leave_out = (vectors.sum(0) - vectors).pow(2).sum(1)  # the set's cost without each member
        del removed[int(leave_out.argmin())]
    return torch.tensor(sorted(removed), dtype=torch.long)
