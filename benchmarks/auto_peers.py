"""The convnet side by side with NNCF (issue 24's peer row), in one runtime: ONNX Runtime.

- **The peer:** NNCF's ``quantize_with_accuracy_control`` (post-training int8, QDQ) on a
  ``torch.onnx`` export of the fp32 convnet, at the row's max drop (absolute, on the validation
  split: NNCF reverts the layers that cost most to fp32 until the drop fits). NNCF is installed
  with ``pip install --target .peers --no-deps`` beside torch, never pulling another.
- **Ours:** each seed's ``netshrink auto`` model of the latency row, exported to ONNX
  (``netshrink.quant.onnx_export``), and the same file through ONNX Runtime's static int8
  quantization; the int8 file is ours when its validation accuracy stays within the max drop,
  the fp32 one otherwise (chosen on validation, before the test split is read).
- Both sides calibrate on the same 300 training images and validate on the same split. Their
  batch-1 latencies (one thread, a real test image) are timed interleaved in one process
  (``netshrink.measure.interleaved_ms``), so a load change hits every file alike.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

CALIBRATION_IMAGES = 300  # NNCF's default subset size; ours calibrates on the same images
LATENCY_ROUNDS = 200
VALIDATION_BATCH = 500


def export_fp32(model: torch.nn.Module, path: Path, data) -> Path:
    """``model`` as an fp32 ONNX file (batch dynamic), checked against PyTorch on real images."""
    from netshrink.quant.onnx_export import export_onnx

    export_onnx(model.eval(), path, data.val.x[:8])
    return path


def nncf_int8(fp32: Path, path: Path, data, max_drop_points: float) -> dict:
    """NNCF's accuracy-controlled int8 of ``fp32`` written to ``path``, and its seconds; or the
    one-line reason it could not run."""
    try:
        import nncf
        import onnx
    except Exception as error:  # noqa: BLE001 (any import failure is the peer's reason)
        return {"reason": f"nncf is not importable here ({type(error).__name__}: {str(error)[:80]})"}
    from netshrink.quant.onnx_export import _session, onnx_accuracy

    name = _session(fp32).get_inputs()[0].name
    calibration = [data.train.x[i:i + 1].numpy() for i in range(CALIBRATION_IMAGES)]
    validation = [(data.val.x[i:i + VALIDATION_BATCH], data.val.y[i:i + VALIDATION_BATCH])
                  for i in range(0, len(data.val.y), VALIDATION_BATCH)]

    def validate(model, items) -> float:
        x, y = zip(*items, strict=True)
        return onnx_accuracy(model.SerializeToString(), torch.cat(x), torch.cat(y), VALIDATION_BATCH)

    started = time.perf_counter()
    try:
        quantized = nncf.quantize_with_accuracy_control(
            onnx.load(fp32), nncf.Dataset(calibration, lambda image: {name: image}),
            nncf.Dataset(validation, lambda item: {name: item[0].numpy()}), validate,
            max_drop=max_drop_points / 100, drop_type=nncf.DropType.ABSOLUTE)
    except Exception as error:  # noqa: BLE001 (the peer's failure is its reason; the other rows publish)
        return {"reason": f"nncf failed: {type(error).__name__}: {str(error)[:160]}"}
    onnx.save(quantized, path)
    return {"file": str(path), "seconds": time.perf_counter() - started}


def ours(model: torch.nn.Module, folder: Path, data, max_drop_points: float, original_val: float) -> dict:
    """Our model as ONNX: fp32, and ONNX Runtime's static int8 of it (min-max ranges on the
    calibration images), the int8 file chosen when its validation accuracy is within the max drop."""
    from netshrink.quant.onnx_export import onnx_accuracy, quantize_onnx_int8

    folder.mkdir(parents=True, exist_ok=True)
    fp32 = export_fp32(model, folder / "ours_fp32.onnx", data)
    int8 = folder / "ours_int8.onnx"
    quantize_onnx_int8(fp32, int8, data.train.x[:CALIBRATION_IMAGES])
    val = {name: onnx_accuracy(file, data.val.x, data.val.y) for name, file in (("fp32", fp32), ("int8", int8))}
    chosen = "int8" if 100 * (original_val - val["int8"]) <= max_drop_points else "fp32"
    return {"file": str(int8 if chosen == "int8" else fp32), "chosen": chosen, "val_accuracy": val}


def side_by_side(files: dict[str, str], data) -> dict[str, dict]:
    """Each ONNX file's bytes, validation and test accuracy, and batch-1 ms (one thread), the
    files timed interleaved on one real test image."""
    from netshrink.measure import interleaved_ms
    from netshrink.quant.onnx_export import _session, onnx_accuracy, onnx_feed

    sessions = {name: _session(file) for name, file in files.items()}
    feeds = {name: onnx_feed(session, data.test.x[:1]) for name, session in sessions.items()}
    ms = interleaved_ms({name: (lambda s=s, f=feeds[name]: s.run(None, f)) for name, s in sessions.items()},
                        LATENCY_ROUNDS)
    return {name: {"file_bytes": os.path.getsize(file), "batch1_ms": ms[name],
                   "val_accuracy": onnx_accuracy(file, data.val.x, data.val.y),
                   "test_accuracy": onnx_accuracy(file, data.test.x, data.test.y)} for name, file in files.items()}
