"""``group_fmin``: GGUF Q4_1-style blocks (float16 scale and float16 minimum per group of 32) found
in a dequantized float32 tensor and stored in about their quantized size, bit for bit."""

import numpy as np
import pytest
import torch

from netshrink.codec.container import load, save
from netshrink.codec.encodings.group_fmin import GroupFloatMin
from netshrink.codec.tensor_encodings import decode_streams, encode_tensor, tensor_bits
from netshrink.core.errors import NetshrinkFormatError


def _q4_1_blocks(rows: int, columns: int, seed: int = 0):
    """q in 0..15 and per block of 32 a float16 scale ``(max - min) / 15`` and minimum, as ggml's
    ``quantize_row_q4_1`` makes them from a Gaussian weight."""
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(rows * columns // 32, 32, generator=generator) * 0.05
    low, high = weight.amin(dim=1), weight.amax(dim=1)
    scales, minimums = ((high - low) / 15).half(), low.half()
    q = torch.round((weight - minimums.float()[:, None]) / scales.float()[:, None]).clamp(0, 15)
    return q.numpy().astype(np.float32), scales.numpy(), minimums.numpy()


def _dequantized(q, scales, minimums, shape):
    """gguf-py's ``Q4_1.dequantize_blocks``: ``(d * qs) + m`` on float32 arrays."""
    return torch.from_numpy(((scales.astype(np.float32)[:, None] * q) + minimums.astype(np.float32)[:, None])
                            .reshape(shape))


def _decoded(encoded, tensor):
    return decode_streams(encoded.chain, encoded.params, {s.role: s for s in encoded.streams}, "float32",
                          list(tensor.shape))


@pytest.mark.parametrize("effort", ["max", "default"])
def test_q4_1_blocks_are_found_and_stored_below_their_gguf_size(effort):
    weight = _dequantized(*_q4_1_blocks(96, 576), (96, 576))
    encoded = encode_tensor(weight, effort=effort)
    assert encoded.chain == ["group_fmin"] and encoded.params["group_fmin"] == {"bits": 4, "group": 32}
    assert encoded.cost() <= weight.numel() // 32 * 20  # GGUF's Q4_1: 20 bytes a block
    assert np.array_equal(tensor_bits(_decoded(encoded, weight)), tensor_bits(weight))


def test_the_default_effort_leaves_float_minimum_grids_of_a_large_fp32_tensor_to_max():
    """Above the sample size the default effort keeps a wide float's float-minimum grids for
    ``effort="max"`` (they decode at entropy-coder speed); max finds them."""
    weight = _dequantized(*_q4_1_blocks(128, 576), (128, 576))
    assert "group_fmin" not in encode_tensor(weight, effort="default").chain
    assert encode_tensor(weight, effort="max").chain == ["group_fmin"]


def test_the_formula_is_gguf_pys():
    gguf = pytest.importorskip("gguf")
    q, scales, minimums = _q4_1_blocks(8, 64, seed=1)
    packed = q.astype(np.uint8).reshape(-1, 2, 16)
    blocks = np.concatenate([scales.view(np.uint8).reshape(-1, 2), minimums.view(np.uint8).reshape(-1, 2),
                             packed[:, 0] | (packed[:, 1] << 4)], axis=1)
    theirs = gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType.Q4_1).reshape(8, 64)
    assert np.array_equal(theirs.view(np.int32), _dequantized(q, scales, minimums, (8, 64)).numpy().view(np.int32))


def test_values_off_the_grids_are_not_taken():
    q, scales, minimums = _q4_1_blocks(32, 64)
    weight = _dequantized(q, scales, minimums, (32, 64))
    assert GroupFloatMin().encode(tensor_bits(weight), "float32", [32, 64], "auto") is not None
    nudged = weight.clone()
    nudged[5, 7] = torch.nextafter(nudged[5, 7], torch.tensor(1.0))
    assert GroupFloatMin().encode(tensor_bits(nudged), "float32", [32, 64], "auto") is None
    noise = torch.randn(32, 64, generator=torch.Generator().manual_seed(3))
    assert GroupFloatMin().encode(tensor_bits(noise), "float32", [32, 64], "auto") is None


def test_a_model_of_q4_1_weights_round_trips_smaller(tmp_path):
    model = torch.nn.Linear(256, 64, bias=False)
    with torch.no_grad():
        model.weight.copy_(_dequantized(*_q4_1_blocks(64, 256, seed=2), (64, 256)))
    path = tmp_path / "q4_1.nsk"
    save(model, path)
    assert path.stat().st_size < 64 * 256 * 4 // 5
    loaded = load(path, model=torch.nn.Linear(256, 64, bias=False))
    assert torch.equal(loaded.weight, model.weight)


@pytest.mark.parametrize(("params", "dtype", "match"), [
    ({"bits": 0, "group": 32}, "float32", "bits"),
    ({"bits": 9, "group": 32}, "float32", "bits"),
    ({"bits": 4, "group": 48}, "float32", "does not divide"),
    ({"bits": 4, "group": 0}, "float32", "group"),
    ({"bits": 4, "group": 32}, "float16", "float32"),
])
def test_bad_params_are_refused(params, dtype, match):
    with pytest.raises(NetshrinkFormatError, match=match):
        GroupFloatMin().check({"group_fmin": params}, dtype, [4, 64], 256)
