"""Real int8 execution on CPU: export to ONNX, quantize with ONNX Runtime, check against PyTorch.

torch's own int8 CPU paths are slow or deprecated; ONNX Runtime is what users deploy. The model is
exported with torch's ONNX exporter (batch dimension dynamic), run by ONNX Runtime and compared
with PyTorch on real inputs (the export is refused when fp32 outputs differ by more than
``FP32_TOLERANCE``). The ONNX file is self-contained (weights inside, no external data file), so models must be
under protobuf's 2 GB. ``quantize_onnx_int8`` is ONNX Runtime's static quantization
(``onnxruntime.quantization.quantize_static``, QDQ format, int8 weights per channel, uint8
activations) calibrated on a few batches of inputs (min-max, percentile or entropy ranges).
"""

from __future__ import annotations

import contextlib
import io
import os
import statistics
import time

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from netshrink.core.errors import ConfigError, NetshrinkError, one_line

FP32_TOLERANCE = 1e-4
ORT_CALIBRATIONS = ("minmax", "percentile", "entropy")


def _session(path: str | os.PathLike, threads: int = 1):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(path: str | os.PathLike, inputs: torch.Tensor, threads: int = 1) -> np.ndarray:
    """The ONNX model's outputs on ``inputs`` (float32)."""
    session = _session(path, threads)
    return session.run(None, {session.get_inputs()[0].name: inputs.float().numpy()})[0]


def check_inputs(model: nn.Module, inputs: torch.Tensor, what: str = "inputs") -> None:
    """A one-line error when ``inputs`` are not a float batch the model accepts."""
    if not isinstance(inputs, torch.Tensor) or not inputs.is_floating_point() or inputs.dim() < 2:
        raise ConfigError(f"{what} must be a float tensor batch (N, ...), got "
                          f"{getattr(inputs, 'shape', type(inputs).__name__)}")
    try:
        with torch.no_grad():
            model.eval()(inputs[:1])
    except RuntimeError:
        raise ConfigError(f"{what} of shape {tuple(inputs.shape)} do not fit the model; give a batch shaped "
                          "like the data it was trained on, e.g. (N, 1, 28, 28)") from None


def export_onnx(model: nn.Module, path: str | os.PathLike, inputs: torch.Tensor) -> float:
    """Export ``model`` (finalized) to ONNX at ``path`` and return the largest absolute difference
    between ONNX Runtime's and PyTorch's outputs on ``inputs``; more than ``FP32_TOLERANCE`` is an
    error."""
    if any(parametrize.is_parametrized(m) for m in model.modules()):
        raise ConfigError("the model still has training-time transforms; call finalize_(model) before exporting")
    check_inputs(model, inputs)
    model = model.eval()
    batch = torch.export.Dim("batch", min=1)
    try:
        with contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
            torch.onnx.export(model, (inputs[:2],), str(path), dynamo=True, verbose=False, input_names=["input"],
                              output_names=["logits"], dynamic_shapes=({0: batch},), external_data=False)
    except Exception as error:  # the exporter raises many types; the user gets one line
        raise NetshrinkError(f"ONNX export failed: {one_line(error)}") from None
    with torch.no_grad():
        expected = model(inputs).numpy()
    difference = float(np.abs(run_onnx(path, inputs) - expected).max())
    if difference > FP32_TOLERANCE:
        raise NetshrinkError(f"ONNX Runtime's outputs differ from PyTorch's by {difference:.3g} (> {FP32_TOLERANCE}); "
                             "the export is wrong for this model")
    return difference


def quantize_onnx_int8(fp32_path: str | os.PathLike, int8_path: str | os.PathLike, calibration: torch.Tensor,
                       method: str = "minmax", batch_size: int = 64) -> None:
    """ONNX Runtime static int8 quantization of ``fp32_path`` into ``int8_path``, activation
    ranges calibrated on ``calibration`` (a batch shaped like the model's input)."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantType, quantize_static

    if method not in ORT_CALIBRATIONS:
        raise ConfigError(f"unknown calibration {method!r}; choose one of {list(ORT_CALIBRATIONS)}")
    session = _session(fp32_path)
    expected = session.get_inputs()[0].shape
    if calibration.dim() != len(expected) or any(
            isinstance(want, int) and want != got for want, got in zip(expected, calibration.shape, strict=False)):
        raise ConfigError(f"calibration data has shape {tuple(calibration.shape)} but the model takes "
                          f"{tuple(d if isinstance(d, int) else 'N' for d in expected)}; give inputs of that shape")
    name = session.get_inputs()[0].name
    batches = [calibration[i:i + batch_size].float().numpy() for i in range(0, len(calibration), batch_size)]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.remaining = iter(batches)

        def get_next(self) -> dict | None:
            batch = next(self.remaining, None)
            return None if batch is None else {name: batch}

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    quantize_static(str(fp32_path), str(int8_path), Reader(), per_channel=True, weight_type=QuantType.QInt8,
                    activation_type=QuantType.QUInt8, calibrate_method=methods[method])


def onnx_latency_ms(path: str | os.PathLike, inputs: torch.Tensor, threads: int = 1, repeats: int = 30,
                    warmup: int = 5) -> float:
    """Median milliseconds of one ONNX Runtime run on ``inputs`` after warm-up."""
    session = _session(path, threads)
    feed = {session.get_inputs()[0].name: inputs.float().numpy()}
    for _ in range(warmup):
        session.run(None, feed)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def onnx_accuracy(path: str | os.PathLike, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    """Top-1 accuracy of the ONNX model on ``(x, y)``."""
    correct = 0
    for i in range(0, len(y), batch_size):
        correct += int((run_onnx(path, x[i:i + batch_size]).argmax(axis=1) == y[i:i + batch_size].numpy()).sum())
    return correct / max(len(y), 1)
