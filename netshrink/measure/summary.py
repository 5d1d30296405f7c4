"""One call that measures everything netshrink reports about a model."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from netshrink.data.dataset import Split
from netshrink.measure.accuracy import evaluate
from netshrink.measure.latency import measure_latency
from netshrink.measure.macs import count_macs
from netshrink.measure.size import count_nonzero, count_parameters, dense_fp32_bytes, fp32_baseline


def measure_model(model: nn.Module, input_shape: Sequence[int], split: Split | None = None,
                  threads: int = 1, latency_batches: Sequence[int] = (1, 256),
                  repeats: int = 30) -> dict:
    """Parameters, nonzeros, dense fp32 bytes (of the model as it is, and the baseline of
    compression rates: the original model's, ``fp32_baseline``), MACs, latency at each batch size
    (on ``split``'s inputs when given), and accuracy."""
    baseline = fp32_baseline(model)
    result = {
        "params": count_parameters(model),
        "nonzero_params": count_nonzero(model),
        "dense_fp32_bytes": dense_fp32_bytes(model),
        "baseline_fp32_bytes": baseline.nbytes,
        "baseline_is_original": baseline.original,
        "macs": count_macs(model, input_shape),
        "latency": {
            f"batch_{b}": measure_latency(model, input_shape, batch_size=b, threads=threads,
                                          repeats=repeats if b == 1 else max(5, repeats // 3),
                                          inputs=split.x if split is not None and len(split.x) else None)
            for b in latency_batches
        },
    }
    if split is not None:
        result["accuracy"] = evaluate(model, split)
    return result
