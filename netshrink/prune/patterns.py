"""Sparsity patterns of the calibration-driven pruners (SparseGPT, Wanda): unstructured, or N:M.

``"N:M"`` keeps at most ``N`` nonzero weights in every ``M`` consecutive inputs of each output
(``weight.flatten(1)``'s columns, so a convolution's groups of ``M`` run over its unfolded
receptive field): ``"2:4"`` is the semi-structured sparsity sparse tensor cores run (Mishra et al.
2021), 50% of the weights. Weights already pruned stay pruned: they are dropped first, and a new
mask never keeps what an earlier one removed.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from netshrink.core.errors import ConfigError
from netshrink.prune.selection import check_sparsity, smallest

UNSTRUCTURED = "unstructured"
_N_M = re.compile(r"^(\d+):(\d+)$")


def parse_pattern(pattern: Any) -> tuple[int, int] | None:
    """``(N, M)`` of an ``"N:M"`` pattern, None for ``"unstructured"``, else a one-line ConfigError."""
    if pattern == UNSTRUCTURED:
        return None
    match = _N_M.match(pattern) if isinstance(pattern, str) else None
    if match is None or not 0 < int(match[1]) < int(match[2]):
        raise ConfigError(f"pattern must be 'unstructured' or 'N:M' with 0 < N < M (e.g. '2:4': at most 2 nonzero "
                          f"weights in every 4 consecutive inputs), got {pattern!r}")
    return int(match[1]), int(match[2])


def resolve_sparsity(sparsity: Any, pattern: Any) -> float:
    """The fraction of weights removed: ``sparsity`` (default 0.5) for unstructured pruning,
    ``1 - N / M`` for an N:M pattern, with which a different ``sparsity`` is a one-line ConfigError."""
    n_m = parse_pattern(pattern)
    if n_m is None:
        return check_sparsity(0.5 if sparsity is None else sparsity)
    implied = 1 - n_m[0] / n_m[1]
    if sparsity is not None and (isinstance(sparsity, bool) or not isinstance(sparsity, (int, float))
                                 or abs(sparsity - implied) > 1e-9):
        raise ConfigError(f"pattern {pattern!r} fixes the sparsity at {implied:g}; leave sparsity out, got "
                          f"{sparsity!r}")
    return implied


def check_fits(layer: str, columns: int, pattern: str) -> None:
    """A one-line ConfigError when an N:M pattern does not tile the layer's ``columns`` inputs."""
    n_m = parse_pattern(pattern)
    if n_m is not None and columns % n_m[1]:
        raise ConfigError(f"layer {layer!r} has {columns} inputs, not a multiple of {n_m[1]}, so pattern {pattern!r} "
                          "cannot tile it; leave that layer out")


def _protect(scores: torch.Tensor, prior: torch.Tensor | None) -> torch.Tensor:
    """Scores with the weights a prior mask removed at minus infinity (they go first)."""
    return scores if prior is None else scores.masked_fill(prior == 0, float("-inf"))


def n_m_mask(scores: torch.Tensor, n: int, m: int, prior: torch.Tensor | None = None) -> torch.Tensor:
    """The 0/1 mask keeping the ``n`` highest scores of every ``m`` consecutive columns of each row
    (ties by position), never a weight ``prior`` removed."""
    rows, columns = scores.shape
    grouped = _protect(scores, prior).reshape(rows, columns // m, m)
    order = torch.sort(grouped, dim=2, descending=True, stable=True).indices
    mask = torch.zeros_like(grouped).scatter_(2, order[..., :n], 1.0).reshape(rows, columns)
    return mask if prior is None else mask * (prior != 0)


def lowest_mask(scores: torch.Tensor, sparsity: float, prior: torch.Tensor | None = None,
                per_row: bool = True) -> torch.Tensor:
    """The 0/1 mask removing the ``round(sparsity * n)`` lowest scores of each row (``per_row``, n
    its length) or of the whole tensor (n its size), ties by position, and every weight ``prior``
    removed."""
    scores = _protect(scores, prior)
    mask = torch.ones_like(scores)
    if per_row:
        count = round(sparsity * scores.shape[1])
        drop = torch.sort(scores, dim=1, stable=True).indices[:, :count]
        mask.scatter_(1, drop, 0.0)
    else:
        mask.view(-1)[smallest(scores, round(sparsity * scores.numel()))] = 0.0
    return mask if prior is None else mask * (prior != 0)
