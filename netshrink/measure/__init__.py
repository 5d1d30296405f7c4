"""Measurement: parameters, nonzeros, real file bytes, MACs, latency, accuracy, per-layer table."""

from netshrink.measure.accuracy import evaluate, predict_logits
from netshrink.measure.latency import interleaved_ms, measure_latency, relative_latency
from netshrink.measure.layers import format_layer_table, layer_table
from netshrink.measure.macs import count_macs, count_macs_per_module
from netshrink.measure.size import (
    count_nonzero,
    count_parameters,
    dense_fp32_bytes,
    fp32_safetensors_bytes,
)
from netshrink.measure.summary import measure_model

__all__ = ["evaluate", "predict_logits", "measure_latency", "interleaved_ms", "relative_latency",
           "format_layer_table", "layer_table",
           "count_macs", "count_macs_per_module", "count_nonzero", "count_parameters",
           "dense_fp32_bytes", "fp32_safetensors_bytes", "measure_model"]
