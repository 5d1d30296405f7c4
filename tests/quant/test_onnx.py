"""ONNX export checked against PyTorch; ONNX Runtime int8 calibrated on real inputs."""

import numpy as np
import pytest
import torch

from netshrink.core import finalize_
from netshrink.core.errors import ConfigError
from netshrink.quant import Cluster, cluster_
from netshrink.quant.onnx_export import FP32_TOLERANCE, export_onnx, onnx_accuracy, quantize_onnx_int8, run_onnx
from tests.models import TINY_MODELS


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lenet5", "user_resnet", "transformer"])
def test_fp32_export_matches_pytorch_and_int8_stays_close(name, digits, tmp_path):
    torch.manual_seed(0)
    model = TINY_MODELS[name]().eval()
    x = digits.val.x[:64]
    difference = export_onnx(model, tmp_path / "m.onnx", x)
    with torch.no_grad():
        expected = model(digits.test.x[:100]).numpy()
    # any batch size runs (the batch dimension is dynamic) and matches PyTorch
    assert np.abs(run_onnx(tmp_path / "m.onnx", digits.test.x[:100]) - expected).max() <= FP32_TOLERANCE
    assert difference <= FP32_TOLERANCE
    quantize_onnx_int8(tmp_path / "m.onnx", tmp_path / "m.int8.onnx", digits.val.x[:128])
    int8 = run_onnx(tmp_path / "m.int8.onnx", digits.test.x[:100])
    assert 0 < np.abs(int8 - expected).max() < 0.1 * np.abs(expected).max()  # quantized, and close
    assert onnx_accuracy(tmp_path / "m.int8.onnx", digits.test.x[:100], digits.test.y[:100]) == pytest.approx(
        float((expected.argmax(1) == digits.test.y[:100].numpy()).mean()), abs=0.05)


def test_export_refuses_an_unfinalized_model_and_inputs_of_the_wrong_shape(tmp_path):
    torch.manual_seed(0)
    model = TINY_MODELS["lenet300_100"]()
    cluster_(model, Cluster(bits=2))
    with pytest.raises(ConfigError, match="call finalize_"):
        export_onnx(model, tmp_path / "m.onnx", torch.rand(4, 1, 8, 8))
    finalize_(model)
    with pytest.raises(ConfigError, match=r"inputs of shape \(4, 1, 28, 28\) do not fit the model"):
        export_onnx(model, tmp_path / "m.onnx", torch.rand(4, 1, 28, 28))
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.slow
def test_int8_refuses_calibration_data_of_the_wrong_shape(tmp_path):
    torch.manual_seed(0)
    model = TINY_MODELS["lenet5"]().eval()
    export_onnx(model, tmp_path / "m.onnx", torch.rand(4, 1, 8, 8))
    with pytest.raises(ConfigError, match=r"calibration data has shape \(4, 1, 28, 28\) but the model takes "
                                          r"\('N', 1, 8, 8\)"):
        quantize_onnx_int8(tmp_path / "m.onnx", tmp_path / "q.onnx", torch.rand(4, 1, 28, 28))
    with pytest.raises(ConfigError, match="calibration data has shape"):
        quantize_onnx_int8(tmp_path / "m.onnx", tmp_path / "q.onnx", torch.rand(4, 64))
