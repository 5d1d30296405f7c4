import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from netshrink.codec.float_bytes import decode_float_bytes, encode_float_bytes
from netshrink.core.errors import NetshrinkFormatError
from tests.codec.corrupt import bit_flips, decodes_or_refuses, param_edits, truncations

DTYPES = ("float16", "bfloat16", "float32", "float64")


def weights(dtype: str, n: int, seed: int = 0) -> np.ndarray:
    values = torch.from_numpy(np.random.default_rng(seed).standard_normal(n).astype(np.float32) * 0.05)
    if dtype == "bfloat16":
        return values.bfloat16().view(torch.uint16).numpy()
    return values.numpy().astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip_is_bit_identical_and_smaller(dtype):
    array = weights(dtype, 20_000)
    payload, params = encode_float_bytes(array)
    decoded = decode_float_bytes(payload, params, array.size, dtype)
    assert decoded.dtype == array.dtype and decoded.tobytes() == array.tobytes()
    assert len(payload) < array.nbytes  # the exponent field carries far less than its bits


@settings(max_examples=40, deadline=None)
@given(dtype=st.sampled_from(DTYPES), raw=st.binary(max_size=400))
def test_any_bit_pattern_round_trips(dtype, raw):
    itemsize = 2 if dtype in ("float16", "bfloat16") else np.dtype(dtype).itemsize
    raw = raw[: len(raw) // itemsize * itemsize]
    array = np.frombuffer(raw, dtype=np.uint16 if dtype == "bfloat16" else dtype)
    payload, params = encode_float_bytes(array, dtype)
    assert decode_float_bytes(payload, params, array.size, dtype).tobytes() == raw


def test_special_values_round_trip():
    array = np.array([np.nan, -0.0, 0.0, np.inf, -np.inf, 1e-45, -3.4e38], dtype=np.float32)
    array = np.concatenate([array, np.frombuffer(b"\x01\x00\xc0\x7f", dtype=np.float32)])  # NaN payload
    payload, params = encode_float_bytes(array)
    assert decode_float_bytes(payload, params, array.size, "float32").tobytes() == array.tobytes()


def test_malformed_input_raises_only_format_errors():
    array = weights("float32", 3000)
    payload, params = encode_float_bytes(array)
    for bad in truncations(payload):
        with pytest.raises(NetshrinkFormatError):
            decode_float_bytes(bad, params, array.size, "float32")
    for bad in bit_flips(payload, 60):
        decodes_or_refuses(decode_float_bytes, bad, params, array.size, "float32")
    planes = params["planes"]
    edits = param_edits(params) + [None, dict(params, planes=planes[:-1])]
    edits += [dict(params, planes=[dict(p, method="ans") for p in planes])]
    edits += [dict(params, planes=[dict(p, size=p["size"] + 1) for p in planes])]
    edits += [dict(params, planes=[dict(p, extra=1) for p in planes])]
    edits += [dict(params, planes=[dict(p, params={"code_lengths": "x"}) for p in planes])]
    for bad in edits:
        decodes_or_refuses(decode_float_bytes, payload, bad, array.size, "float32")
    for dtype in ("float16", "int8", None):
        with pytest.raises(NetshrinkFormatError):
            decode_float_bytes(payload, params, array.size, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_large_tensors_are_coded_in_chunks_each_decoded_alone(dtype, monkeypatch):
    """Chunks bound the memory of coding one tensor and let threads share the work; the round
    trip is the same, and the chunked params are checked like the planes."""
    import netshrink.codec.float_bytes as float_bytes

    monkeypatch.setattr(float_bytes, "CHUNK", 4096)
    monkeypatch.setattr(float_bytes, "LONG_PLANE", 1024)
    array = weights(dtype, 3 * 4096 + 5)
    payload, params = encode_float_bytes(array)
    assert params["chunk"] == 4096 and len(params["chunks"]) == 4
    assert decode_float_bytes(payload, params, array.size, dtype).tobytes() == array.tobytes()
    assert len(payload) < array.nbytes
    chunks = params["chunks"]
    for bad in [dict(params, chunks=chunks[:-1]), dict(params, chunk=0), dict(params, chunk=4095),
                dict(params, chunks=[chunks[0]] * 4), dict(params, planes=chunks[0]),
                dict(params, chunks=[[dict(p, size=p["size"] + 1) for p in c] for c in chunks])]:
        with pytest.raises(NetshrinkFormatError):
            decode_float_bytes(payload, bad, array.size, dtype)
    for bad in bit_flips(payload, 20):
        decodes_or_refuses(decode_float_bytes, bad, params, array.size, dtype)


def test_a_long_uniform_plane_is_stored_raw_without_running_a_coder(monkeypatch):
    import netshrink.codec.float_bytes as float_bytes

    calls = []
    real = float_bytes.encode_symbols
    monkeypatch.setattr(float_bytes, "encode_symbols", lambda s, a, m: calls.append(m) or real(s, a, m))
    bits = np.random.default_rng(0).integers(0, 2 ** 16, 1 << 17, dtype=np.uint16)  # every field uniform
    payload, params = encode_float_bytes(bits, "bfloat16")
    assert [p["method"] for p in params["planes"]] == ["none", "none"] and calls == ["none", "none"]
