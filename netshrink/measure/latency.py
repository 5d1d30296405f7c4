"""Latency: median wall time of repeated forward passes after warm-up, thread count fixed, on real
inputs when given (a model with early exits costs what its inputs make it cost; random noise is
no sample's workload). On a shared CPU a comparison is timed interleaved (``interleaved_ms``,
``relative_latency``): the runs take turns, so a change of load hits each side alike."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn


@torch.no_grad()
def measure_latency(model: nn.Module, input_shape: Sequence[int], batch_size: int = 1,
                    threads: int = 1, warmup: int = 10, repeats: int = 50,
                    min_seconds: float = 0.0, inputs: torch.Tensor | None = None) -> dict[str, float]:
    """Median, p10 and p90 milliseconds per forward pass of a batch, in eval mode and under
    ``torch.inference_mode``.

    ``inputs`` (real samples, e.g. the validation images): each pass runs the next batch of them,
    cycling, so the median is over different real batches; without them every pass runs one batch
    of ``torch.randn`` noise of ``input_shape`` (fine for a static model, whose cost does not
    depend on the values).

    ``threads`` is set with ``torch.set_num_threads`` for the measurement and restored after;
    it is reported with the result so numbers are never compared across thread counts.
    Runs at least ``repeats`` times and at least ``min_seconds`` in total.
    """
    previous_threads = torch.get_num_threads()
    was_training = model.training
    try:
        torch.set_num_threads(threads)
        model.eval()
        batches = _batches(inputs, batch_size) if inputs is not None else [torch.randn(batch_size, *input_shape)]
        times: list[float] = []
        with torch.inference_mode():  # as deployed: no autograd bookkeeping
            for i in range(warmup):
                model(batches[i % len(batches)])
            start = time.perf_counter()
            while len(times) < repeats or time.perf_counter() - start < min_seconds:
                x = batches[len(times) % len(batches)]
                t0 = time.perf_counter()
                model(x)
                times.append((time.perf_counter() - t0) * 1e3)
    finally:
        torch.set_num_threads(previous_threads)
        model.train(was_training)
    times.sort()
    return {
        "median_ms": statistics.median(times),
        "p10_ms": times[len(times) // 10],
        "p90_ms": times[(len(times) * 9) // 10],
        "batch_size": batch_size,
        "threads": threads,
        "runs": len(times),
    }


def _batches(inputs: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """``inputs`` cut into whole batches of ``batch_size`` (repeated first when there are fewer)."""
    if len(inputs) < batch_size:
        inputs = inputs.repeat(math.ceil(batch_size / max(len(inputs), 1)), *[1] * (inputs.dim() - 1))
    return [inputs[i:i + batch_size] for i in range(0, len(inputs) - batch_size + 1, batch_size)]


def interleaved_ms(runners: Mapping[str, Callable[[], object]], rounds: int,
                   min_seconds: float = 0.0) -> dict[str, float]:
    """Median milliseconds of each runner (a call running one forward pass, of any runtime), the
    runners taking turns at least ``rounds`` times, and for at least ``min_seconds`` in all, after
    one warm-up call each: another process's load slows every runner alike, so their ratios hold
    where their absolute times do not (a sub-millisecond pass needs many turns to outlast the
    scheduler's time slices)."""
    for run in runners.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in runners}
    started = time.perf_counter()
    while len(next(iter(times.values()))) < rounds or time.perf_counter() - started < min_seconds:
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(values) for name, values in times.items()}


@torch.no_grad()
def relative_latency(model: nn.Module, reference: nn.Module, inputs: torch.Tensor, rounds: int = 30,
                     threads: int = 1, min_seconds: float = 0.0) -> float:
    """``model``'s batch latency over ``reference``'s on the same batch ``inputs`` (both in eval
    mode, ``threads`` torch threads), timed interleaved (``interleaved_ms``)."""
    previous_threads = torch.get_num_threads()
    modes = model.training, reference.training
    try:
        torch.set_num_threads(threads)
        model.eval()
        reference.eval()
        with torch.inference_mode():
            ms = interleaved_ms({"model": lambda: model(inputs), "reference": lambda: reference(inputs)}, rounds,
                                min_seconds)
    finally:
        torch.set_num_threads(previous_threads)
        model.train(modes[0])
        reference.train(modes[1])
    return ms["model"] / ms["reference"]
