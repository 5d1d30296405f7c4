"""An encoding is one unit: a new one is one class plus one entry in ``ENCODINGS``, and the
writer, the validator, the decoder and the decoded-bytes bound all pick it up."""

import numpy as np
import pytest
import torch
from torch import nn

import netshrink.codec.encodings as encodings
from netshrink.codec.container import load, read_tensors, save
from netshrink.codec.encodings.base import BYTES, Encoded, Encoding, Stream, bits_from_bytes, itemsize
from netshrink.codec.tensor_encodings import chain_roles, parse_chain
from netshrink.core.errors import NetshrinkFormatError


class Constant(Encoding):
    """A toy encoding: every element has one bit pattern, stored once."""

    name = "constant"
    roles = {"value": BYTES}

    def encode(self, bits, dtype, shape, entropy):
        if bits.size == 0 or not np.all(bits == bits[0]):
            return None
        return Encoded(["constant"], {}, [Stream("value", bits[:1].tobytes())])

    def raw_bytes(self, role, params, dtype, count):
        return itemsize(dtype)

    def decode(self, params, streams, dtype, shape, count):
        return np.repeat(bits_from_bytes(streams["value"].data, dtype), count)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 8)

    def forward(self, x):
        return self.fc(x)


@pytest.fixture
def with_constant(monkeypatch):
    monkeypatch.setattr(encodings, "ENCODINGS", [*encodings.ENCODINGS, Constant()])


def test_a_new_encoding_is_one_unit_in_one_list(with_constant, tmp_path):
    assert parse_chain("constant") == ("constant",)
    assert parse_chain("sparse+constant") == ("sparse", "constant")  # a value encoding follows a wrapper
    assert chain_roles(["sparse", "constant"]) == {"gaps": "symbols", "values.value": "bytes"}
    model = Net()
    with torch.no_grad():
        model.fc.bias.fill_(0.75)
    save(model, tmp_path / "m.nsk")
    doc, specs, tensors = read_tensors(tmp_path / "m.nsk")
    assert specs["fc.bias"].chain == ["constant"]  # the cheapest exact encoding
    assert torch.equal(tensors["fc.bias"], model.fc.bias)
    loaded = load(tmp_path / "m.nsk", model=Net())
    assert torch.equal(loaded.fc.weight, model.fc.weight) and torch.equal(loaded.fc.bias, model.fc.bias)


def test_a_chain_of_an_unregistered_encoding_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(encodings, "ENCODINGS", [*encodings.ENCODINGS, Constant()])
    model = Net()
    with torch.no_grad():
        model.fc.bias.fill_(0.75)
    save(model, tmp_path / "m.nsk", encodings={"fc.bias": "constant"})
    monkeypatch.setattr(encodings, "ENCODINGS", [e for e in encodings.ENCODINGS if e.name != "constant"])
    with pytest.raises(NetshrinkFormatError, match="unknown encoding 'constant'"):
        load(tmp_path / "m.nsk", model=Net())
    with pytest.raises(NetshrinkFormatError, match="unknown encoding"):
        parse_chain("constant")


def test_version_2_files_are_still_read(tmp_path):
    """Version 3 leaves default Huffman params out; a version 2 file spells them all out."""
    import json
    import zlib

    import safetensors.numpy

    from netshrink.codec.huffman import _offset_bits, huffman_encode

    symbols = np.random.default_rng(0).integers(0, 4, 5000)
    book = np.array([1.0, 2.0, 3.0, 4.0], dtype=np.float32)
    payload, params = huffman_encode(symbols, 4, block_size=4096)
    params.update(max_length=16, offset_bits=_offset_bits(4096, 16))  # as version 2 wrote them
    body = book.tobytes() + payload
    entry = {"shape": [5000], "chain": "codebook", "params": {"codebook": {"size": 4}},
             "streams": {"indices": {"n": len(payload), "method": "huffman", "params": params}},
             "crc": zlib.crc32(book[symbols].tobytes())}
    doc = {"format_version": 2, "tensors": {"w": entry}, "stream_crc": zlib.crc32(body)}
    (tmp_path / "v2.nsk").write_bytes(safetensors.numpy.save(
        {"streams": np.frombuffer(body, dtype=np.uint8)}, metadata={"netshrink": json.dumps(doc)}))
    assert np.array_equal(read_tensors(tmp_path / "v2.nsk")[2]["w"].numpy(), book[symbols])


def _tensors(n):
    generator = torch.Generator().manual_seed(0)
    signs = torch.where(torch.rand(n, generator=generator) < 0.5, 1.0, -1.0)
    return {
        "dense": torch.randn(n, generator=generator),
        "float_bytes": torch.randn(n, generator=generator),
        "codebook": torch.randint(0, 32, (n,), generator=generator).float(),
        "int": (torch.randint(0, 200, (n,), generator=generator) - 3).float() * 0.5,
        "binary": signs.reshape(100, -1),
        "sparse": torch.randn(n, generator=generator) * (torch.rand(n, generator=generator) < 0.1),
    }


@pytest.mark.parametrize("entropy", ["huffman", "ans", "none"])
@pytest.mark.parametrize("name", list(_tensors(100)))
def test_decoding_allocates_no_more_than_the_units_bound(name, entropy):
    """The decoded-bytes cap counts each unit's ``work_bytes``: outputs and intermediates. Decoding
    must stay within it (tracemalloc traces numpy's allocations)."""
    import tracemalloc

    from netshrink.codec.tensor_encodings import decode_streams, encode_tensor, work_bytes

    tensor = _tensors(300_000)[name]
    encoded = encode_tensor(tensor, entropy, prefer=name)
    assert encoded.chain[0] == name
    streams = {s.role: s for s in encoded.streams}
    tracemalloc.start()
    try:
        decoded = decode_streams(encoded.chain, encoded.params, streams, "float32", list(tensor.shape))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert torch.equal(decoded, tensor)
    # the bound is about buffers; tracemalloc also sees the interpreter's small objects (frames,
    # dicts: under a kilobyte, more when a GC cycle or a cache fill lands inside the window)
    interpreter_slack = 64 * 1024
    assert peak <= work_bytes(encoded.chain, encoded.params, "float32", list(tensor.shape)) + interpreter_slack
