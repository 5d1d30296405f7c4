"""The SVD behind every conversion: a layer's kernel as a matrix, its best rank-r factors, its spectrum.

Each conversion writes the weight ``W`` of a layer as one or more matrices whose rank-r truncated
SVD ``U_r S_r V_r^T`` is the best rank-r approximation in least squares (Eckart-Young), and splits
``S_r`` evenly between the two factors (``U_r S_r^1/2`` and ``S_r^1/2 V_r^T``) so neither factor
is much larger in scale than the other when fine-tuned. The four kinds:

- ``linear``: ``W`` (O x I) itself; ``reduce`` (r x I) then ``expand`` (O x r).
- ``channel``: ``W`` as O x (I k_h k_w): a k_h x k_w conv to r channels, then a 1 x 1 conv
  (Zhang et al. 2016, "Accelerating Very Deep Convolutional Networks", sec. 3; Jaderberg et al.
  2014 sec. 3.1 scheme 1 in its channel form).
- ``spatial``: ``W`` as (I k_h) x (O k_w): a k_h x 1 conv to r channels, then a 1 x k_w conv
  (Jaderberg, Vedaldi & Zisserman 2014, "Speeding up Convolutional Neural Networks with Low Rank
  Expansions", sec. 3.1 scheme 2; the SVD solves it in closed form, Tai et al. 2016 sec. 3.1).
- ``separable``: for each input channel c, the slice ``W[:, c]`` as O x (k_h k_w); its rank-m
  approximation is m depthwise filters and m pointwise columns (depth multiplier m; a depthwise
  separable convolution is this constrained low-rank form, Howard et al. 2017 sec. 3.1).

torch.linalg.svd does the decomposition (in float64, cast back), nothing is hand-written.
"""

from __future__ import annotations

import torch

KINDS = ("linear", "channel", "spatial", "separable")


def matricize(weight: torch.Tensor, kind: str) -> torch.Tensor:
    """The matrix (for ``separable`` the batch of I matrices) whose truncated SVD gives the factors."""
    if kind == "linear":
        return weight  # (O, I)
    out_channels, in_channels, kh, kw = weight.shape
    if kind == "channel":
        return weight.reshape(out_channels, in_channels * kh * kw)  # (O, I kh kw)
    if kind == "spatial":
        return weight.permute(1, 2, 0, 3).reshape(in_channels * kh, out_channels * kw)  # (I kh, O kw)
    if kind == "separable":
        return weight.permute(1, 0, 2, 3).reshape(in_channels, out_channels, kh * kw)  # (I, O, kh kw)
    raise ValueError(f"unknown factorization kind {kind!r}; one of {KINDS}")


def singular_values(weight: torch.Tensor, kind: str) -> torch.Tensor:
    """Singular values of ``matricize(weight, kind)``, largest first (float64)."""
    return torch.linalg.svdvals(matricize(weight.detach(), kind).double())


def low_rank_factors(matrix: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(left, right)`` with ``left @ right`` the best rank-``rank`` approximation of ``matrix``
    (batched over leading dimensions); the singular values are split as square roots."""
    u, s, vh = torch.linalg.svd(matrix.detach().double(), full_matrices=False)
    root = s[..., :rank].sqrt()
    left = u[..., :, :rank] * root.unsqueeze(-2)  # (..., m, r)
    right = root.unsqueeze(-1) * vh[..., :rank, :]  # (..., r, n)
    return left.to(matrix.dtype), right.to(matrix.dtype)


def factor_weights(weight: torch.Tensor, kind: str, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights of the first and second layer that replace ``weight`` (see the module docstring)."""
    left, right = low_rank_factors(matricize(weight, kind), rank)
    if kind == "linear":
        return right, left  # reduce (r, I), expand (O, r)
    out_channels, in_channels, kh, kw = weight.shape
    if kind == "channel":
        return right.reshape(rank, in_channels, kh, kw), left.reshape(out_channels, rank, 1, 1)
    if kind == "spatial":
        vertical = left.T.reshape(rank, in_channels, kh, 1)
        horizontal = right.reshape(rank, out_channels, kw).permute(1, 0, 2).reshape(out_channels, rank, 1, kw)
        return vertical, horizontal
    # separable: left (I, O, m), right (I, m, kh kw); depthwise channel c*m + j is filter j of input c
    depthwise = right.reshape(in_channels * rank, 1, kh, kw)
    pointwise = left.permute(1, 0, 2).reshape(out_channels, in_channels * rank, 1, 1)
    return depthwise, pointwise


def energy_rank(values: torch.Tensor, energy: float) -> int:
    """The smallest r whose first r singular values keep at least ``energy`` of ``sum(s**2)``."""
    power = values.double() ** 2
    kept = torch.cumsum(power, 0) / power.sum().clamp_min(torch.finfo(torch.float64).tiny)
    index = int(torch.searchsorted(kept, torch.tensor(energy - 1e-12, dtype=torch.float64)).item())
    return min(index + 1, len(values))
