"""``Budget``: what ``auto`` must reach, checked when it is made; and the parsers of its amounts.

One cost constraint (file bytes, batch-1 latency or MACs per sample), an optional accuracy
constraint (``max_drop``, in validation-accuracy points below the original) and a time limit.
A cost may be absolute (``20000``, ``"20KB"``, ``"1.5ms"``) or relative to the original model,
``"45x"``: 45 times smaller (bytes, against the original's dense fp32 file), faster (latency) or
cheaper (MACs).
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

from netshrink.core.errors import ConfigError

#: the cost a budget constrains, by ``Budget`` field
KINDS = {"max_bytes": "bytes", "max_latency_ms": "latency_ms", "max_macs": "macs"}
RUNTIMES = ("torch", "onnxruntime")  # where a latency budget is timed
#: what each kind is called in messages
UNITS = {"bytes": "bytes", "latency_ms": "ms", "macs": "MACs"}
_SIZE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}
_TIME_UNITS = {"s": 1, "m": 60, "h": 3600}
_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"


def parse_rate(text: str, what: str) -> float | None:
    """``"45x"`` -> 45.0 (a factor against the original); None when ``text`` is not a rate."""
    match = re.fullmatch(_NUMBER + r"\s*x", text.strip().lower())
    if match is None:
        return None
    rate = float(match[1])
    if rate < 1.0:
        raise ConfigError(f"{what} {text!r}: a rate against the original is at least 1x (45x: 45 times smaller)")
    return rate


def parse_size(text: str | int, what: str = "size") -> int:
    """Bytes from ``20000``, ``"20KB"`` (1000), ``"20KiB"`` (1024), ``"1.5MB"``, ``"300B"``."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = float(text)
    else:
        match = re.fullmatch(_NUMBER + r"\s*([kmg]i?b|b)?", str(text).strip().lower())
        if match is None:
            raise ConfigError(f"{what} {text!r} is not a size; write e.g. 20000, 20KB, 1.5MB or 45x")
        value = float(match[1]) * _SIZE_UNITS[match[2] or ""]
    if not math.isfinite(value) or value < 1:
        raise ConfigError(f"{what} must be at least 1 byte, got {text!r}")
    return int(value)


def parse_duration(text: str | float, what: str = "time limit") -> float:
    """Seconds from ``90``, ``"90s"``, ``"60m"``, ``"2h"``, ``"1h30m"``."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        text = str(text).strip().lower()
        if re.fullmatch(_NUMBER, text):
            seconds = float(text)
        elif re.fullmatch(rf"(?:{_NUMBER}\s*[smh]\s*)+", text):
            parts = re.findall(_NUMBER + r"\s*([smh])", text)
            seconds = sum(float(number) * _TIME_UNITS[unit] for number, unit in parts)
        else:
            raise ConfigError(f"{what} {text!r} is not a duration; write e.g. 90s, 60m, 2h or 1h30m")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"{what} must be positive, got {text!r}")
    return seconds


def _positive(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{what} must be a positive number or a rate such as '4x', got {value!r}")
    return float(value)


@dataclasses.dataclass(frozen=True)
class Budget:
    """What ``auto`` searches for: the most accurate model within one cost constraint.

    Args:
        max_bytes: the compressed file's bytes (``20000``, ``"20KB"``, ``"1.5MB"``, or ``"45x"``:
            45 times smaller than the original's dense fp32 file).
        max_latency_ms: batch-1 latency on this CPU, one thread (a number of ms or ``"2.5x"`` faster),
            in ``runtime``.
        max_macs: multiply-accumulates per sample (a number or ``"3x"`` fewer).
        max_drop: the most validation accuracy may fall below the original, in points (0.5: half a
            percentage point); None: no accuracy constraint (the most accurate point within the cost).
            For a text encoder (``auto("minilm", ...)``) the score is its fidelity, 100 x the mean
            cosine of its sentence embeddings to the original's on validation passages (the
            original scores 100): ``max_drop=2.0`` means cosine >= 0.98.
        time_limit: seconds (or ``"60m"``, ``"2h"``) for the whole search, resumed runs included.
        runtime: where a latency is timed: ``"torch"`` (PyTorch eager) or ``"onnxruntime"`` (the
            model exported with ``torch.onnx``, run by ONNX Runtime on the CPU), the runtime the
            result is deployed in. Latency budgets only.

    Give exactly one of ``max_bytes``, ``max_latency_ms``, ``max_macs``.

    Example:
        >>> Budget(max_bytes="20KB", max_drop=0.5, time_limit="60m").limit(1_000_000)
        20000.0
    """

    max_bytes: int | str | None = None
    max_latency_ms: float | str | None = None
    max_macs: int | str | None = None
    max_drop: float | None = None
    time_limit: float | str = 3600.0
    runtime: str = "torch"

    def __post_init__(self) -> None:
        given = [name for name in KINDS if getattr(self, name) is not None]
        if len(given) != 1:
            raise ConfigError(f"give exactly one of {', '.join(KINDS)} (got {', '.join(given) or 'none'})")
        name = given[0]
        value = getattr(self, name)
        if isinstance(value, str):
            rate = parse_rate(value, name)
            if rate is not None:
                value = f"{rate:g}x"
            else:
                value = parse_size(value, name) if name == "max_bytes" else _latency(value, name)
        else:
            value = _positive(value, name)
        object.__setattr__(self, name, value if isinstance(value, str) else _whole(name, value))
        drop = self.max_drop
        if drop is not None and (isinstance(drop, bool) or not isinstance(drop, (int, float))
                                 or not math.isfinite(drop) or drop < 0):
            raise ConfigError(f"max_drop is in accuracy points and at least 0 (0.5: half a point), got {drop!r}")
        object.__setattr__(self, "time_limit", parse_duration(self.time_limit, "time_limit"))
        if self.runtime not in RUNTIMES:
            raise ConfigError(f"runtime {self.runtime!r} is not one of {', '.join(RUNTIMES)}")
        if self.runtime != "torch" and name != "max_latency_ms":
            raise ConfigError(f"runtime={self.runtime!r} times latency; it applies to max_latency_ms, not {name}")

    @property
    def field(self) -> str:
        """The one cost constraint given: ``"max_bytes"``, ``"max_latency_ms"`` or ``"max_macs"``."""
        return next(name for name in KINDS if getattr(self, name) is not None)

    @property
    def kind(self) -> str:
        """What it constrains: ``"bytes"``, ``"latency_ms"`` or ``"macs"``."""
        return KINDS[self.field]

    def limit(self, original: float) -> float:
        """The cost limit, a rate resolved against the ``original`` model's cost of the same kind."""
        value = getattr(self, self.field)
        if isinstance(value, str):
            return original / float(parse_rate(value, self.field))
        return float(value)


def _latency(text: str, what: str) -> float:
    match = re.fullmatch(_NUMBER + r"\s*(ms)?", text.strip().lower())
    if match is None:
        raise ConfigError(f"{what} {text!r} is not a latency; write milliseconds (e.g. 1.5) or a rate such as 2.5x")
    return _positive(float(match[1]), what)


def _whole(name: str, value: float) -> float | int:
    return int(value) if name in ("max_bytes", "max_macs") and float(value).is_integer() else value
