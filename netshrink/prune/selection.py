"""Choosing what to remove: the checked fraction, and the smallest scores with deterministic ties."""

from __future__ import annotations

import math
from typing import Any

import torch

from netshrink.core.errors import ConfigError


def check_sparsity(value: Any, what: str = "sparsity") -> float:
    """``value`` as a float in [0, 1), or a one-line ConfigError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0.0 <= value < 1.0:
        raise ConfigError(f"{what} must be a number in [0, 1), got {value!r} (0.9 removes 90% of the weights)")
    return float(value)


def smallest(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Flat indices of the ``count`` smallest scores, ties broken by position (stable sort)."""
    return torch.sort(scores.flatten(), stable=True).indices[:count]
