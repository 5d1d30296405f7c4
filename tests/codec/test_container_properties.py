"""Property tests: tensors of random shapes, kinds and dtypes round-trip bit for bit."""

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from netshrink.codec.container import read_tensors, save
from netshrink.codec.tensor_encodings import decode_streams, encode_tensor, tensor_bits

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
KINDS = ["dense", "pruned", "codebook", "int", "binary", "special", "constant", "zeros"]
PREFERENCES = [None, "dense", "float_bytes", "int", "codebook", "binary", "sparse", "sparse+codebook",
               "sparse+int", "sparse+dense", "sparse+float_bytes", "nonsense"]


def build(kind: str, shape: list[int], dtype: torch.dtype, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn(shape, generator=generator)
    if kind == "pruned":
        values = values * (torch.rand(shape, generator=generator) < 0.15)
    elif kind == "codebook":
        values = torch.randn(7, generator=generator)[torch.randint(0, 7, shape, generator=generator)]
    elif kind == "int":
        q = torch.randint(0, 2 ** int(torch.randint(1, 9, (), generator=generator)), shape, generator=generator)
        return (q - 3).to(dtype) * torch.tensor(0.037, dtype=dtype)
    elif kind == "binary":
        alpha = torch.rand(shape[:1] + [1] * (len(shape) - 1), generator=generator)
        values = torch.where(torch.rand(shape, generator=generator) < 0.5, alpha, -alpha)
    elif kind == "special":
        pool = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), float("nan"), 1e-40, 65504.0, 2.5])
        values = pool[torch.randint(0, pool.numel(), shape, generator=generator)]
    elif kind == "constant":
        values = torch.full(shape, -0.0)
    elif kind == "zeros":
        values = torch.zeros(shape)
    return values.to(dtype)


tensors = st.builds(
    build, st.sampled_from(KINDS), st.lists(st.integers(1, 12), min_size=1, max_size=3),
    st.sampled_from(DTYPES), st.integers(0, 2**16),
)


@settings(max_examples=150, deadline=None)
@given(tensor=tensors, entropy=st.sampled_from(["auto", "none", "huffman", "ans"]),
       prefer=st.sampled_from(PREFERENCES))
def test_encode_decode_is_bit_identical(tensor, entropy, prefer):
    encoded = encode_tensor(tensor, entropy, prefer)
    streams = {s.role: s for s in encoded.streams}
    decoded = decode_streams(encoded.chain, encoded.params, streams, str(tensor.dtype).removeprefix("torch."),
                             list(tensor.shape))
    assert decoded.dtype == tensor.dtype and decoded.shape == tensor.shape
    assert np.array_equal(tensor_bits(decoded), tensor_bits(tensor))


@settings(max_examples=25, deadline=None)
@given(items=st.lists(tensors, min_size=1, max_size=4), keep_zero_sign=st.booleans())
def test_container_round_trip(items, keep_zero_sign, tmp_path_factory):
    """Every bit comes back with keep_zero_sign; by default only -0.0 may come back as +0.0."""
    holder = nn.Module()
    for index, tensor in enumerate(items):
        holder.register_buffer(f"t{index}", tensor)
    path = tmp_path_factory.mktemp("prop") / "h.nsk"
    save(holder, path, keep_zero_sign=keep_zero_sign)
    _, _, decoded = read_tensors(path)
    for index, tensor in enumerate(items):
        if tensor.is_floating_point() and not keep_zero_sign:
            tensor = torch.where(tensor == 0, torch.zeros_like(tensor), tensor)
        assert np.array_equal(tensor_bits(decoded[f"t{index}"]), tensor_bits(tensor))
