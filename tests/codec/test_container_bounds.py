"""Regressions: tiny hostile files must not make load/read_tensors/inspect allocate gigabytes, and a
tied model loads tied whatever the float dtype of its file."""

import json
import zlib

import numpy as np
import pytest
import safetensors.numpy
import torch
from safetensors import safe_open
from torch import nn

from netshrink.codec.container import MAX_DECODED_BYTES, load, read_kept, read_tensors, save
from netshrink.codec.document import read_document
from netshrink.codec.inspect import inspect_file
from netshrink.core.errors import NetshrinkFormatError
from netshrink.models import create, list_models
from tests.codec.work import bounded, operations


def write(path, tensors, body=b"", arch=None):
    doc = {"format_version": 3, "tensors": tensors, "stream_crc": zlib.crc32(body)}
    if arch is not None:
        doc["architecture"] = arch
    data = safetensors.numpy.save({"streams": np.frombuffer(body, dtype=np.uint8)},
                                  metadata={"netshrink": json.dumps(doc)})
    path.write_bytes(data)
    return len(data)


@pytest.mark.parametrize("kwargs", [{"in_features": 2_000_000}, {"in_features": 20_000}])
def test_zoo_kwargs_asking_for_a_huge_model_are_refused_before_building(tmp_path, kwargs):
    # ~250 bytes; building lenet300_100(in_features=2e6) for real takes 2.4 GB
    path = tmp_path / "big.nsk"
    assert write(path, {}, arch={"name": "lenet300_100", "kwargs": kwargs}) < 400
    errors = []

    def attempt():
        try:
            load(path)
        except NetshrinkFormatError as error:
            errors.append(error)

    assert operations(lambda: bounded(attempt, limit_bytes=16 * 2 ** 20)) < 20_000  # no model is built
    assert len(errors) == 1 and "\n" not in str(errors[0])


def test_zoo_model_with_wrong_shapes_is_refused_before_building(tmp_path):
    model = create("lenet300_100", in_features=64)
    save(model, tmp_path / "m.nsk")
    with safe_open(tmp_path / "m.nsk", framework="numpy") as handle:
        doc = read_document(handle.metadata()["netshrink"])
        body = handle.get_tensor("streams").tobytes()
    doc["architecture"]["kwargs"]["in_features"] = 1_000_000  # 3e8 elements, file has 6e4
    path = tmp_path / "edited.nsk"
    path.write_bytes(safetensors.numpy.save({"streams": np.frombuffer(body, dtype=np.uint8)},
                                            metadata={"netshrink": json.dumps(doc)}))
    with pytest.raises(NetshrinkFormatError):
        bounded(lambda: load(path), limit_bytes=16 * 2 ** 20)
    doc["architecture"]["kwargs"]["in_features"] = 65  # same size class, wrong shape
    path.write_bytes(safetensors.numpy.save({"streams": np.frombuffer(body, dtype=np.uint8)},
                                            metadata={"netshrink": json.dumps(doc)}))
    with pytest.raises(NetshrinkFormatError, match="does not fit"):
        load(path)
    assert torch.equal(load(tmp_path / "m.nsk").fc1.weight, model.fc1.weight)


@pytest.mark.parametrize("name", list_models())
def test_every_zoo_model_builds_on_meta(name):
    with torch.device("meta"):
        model = create(name)
    assert all(t.is_meta for t in model.state_dict().values())


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.out = nn.Linear(4, 10, bias=False)
        self.out.weight = self.emb.weight
        self.register_buffer("scale", torch.ones(4))

    def forward(self, x):
        return self.out(self.emb(x) * self.scale)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_tied_weights_stay_tied_when_the_file_dtype_differs(tmp_path, dtype):
    torch.manual_seed(0)
    saved = Tied().to(dtype)
    saved.scale.fill_(0.5)
    save(saved, tmp_path / "t.nsk")
    fresh = Tied()  # fp32, as load() documents
    loaded = load(tmp_path / "t.nsk", model=fresh)
    assert loaded.out.weight is loaded.emb.weight
    assert loaded.out.weight.data_ptr() == loaded.emb.weight.data_ptr()
    assert loaded.emb.weight.dtype == dtype and loaded.scale.dtype == dtype
    assert isinstance(loaded.emb.weight, nn.Parameter) and loaded.emb.weight.requires_grad
    x = torch.arange(10)
    assert torch.equal(loaded(x), saved.eval()(x))
    with torch.no_grad():  # still one tensor: writing through one name shows through the other
        loaded.emb.weight[0, 0] = 7
    assert loaded.out.weight[0, 0] == 7


def sparse_bomb(path, n=1 << 27, crc_xor=0):
    """392 bytes declaring a 1 GiB all-zero float64 sparse tensor with a correct checksum."""
    crc, left, chunk = 0, n * 8, bytes(1 << 24)
    while left:
        crc, left = zlib.crc32(chunk[:left], crc), left - min(left, len(chunk))
    return write(path, {"w": {"dtype": "float64", "shape": [n], "chain": "sparse+dense",
                              "params": {"sparse": {"index_bits": 1, "entries": 0}},
                              "streams": {"gaps": {"n": 0, "method": "none"}}, "crc": crc ^ crc_xor}})


def test_inspect_of_a_sparse_bomb_is_bounded(tmp_path):
    path = tmp_path / "zeros.nsk"
    assert sparse_bomb(path) < 500
    with pytest.raises(NetshrinkFormatError, match="max_params"):  # 2**27 elements from 392 bytes
        bounded(lambda: inspect_file(path))
    rows = bounded(lambda: inspect_file(path, max_params=1 << 27))  # a trusted file: never expanded
    assert rows[0]["weights"] == 1 << 27 and rows[0]["kept"] == 0


def test_read_tensors_refuses_above_its_decoded_cap(tmp_path):
    path = tmp_path / "zeros.nsk"
    sparse_bomb(path, n=1 << 20)  # 8 MiB declared
    with pytest.raises(NetshrinkFormatError, match="max_decoded_bytes"):
        bounded(lambda: read_tensors(path, max_decoded_bytes=2 ** 20))
    assert read_tensors(path)[2]["w"].count_nonzero() == 0
    assert MAX_DECODED_BYTES <= 2 ** 30


def test_read_kept_checks_sparse_checksums_slice_by_slice(tmp_path):
    model = create("lenet300_100", in_features=64)
    with torch.no_grad():
        model.fc1.weight.mul_(torch.rand_like(model.fc1.weight) < 0.1)
    save(model, tmp_path / "m.nsk")
    _, specs, kept = read_kept(tmp_path / "m.nsk")
    assert specs["fc1.weight"].chain[0] == "sparse"
    for name, tensor in model.state_dict().items():
        assert kept[name] == int(torch.count_nonzero(tensor))
    bad = tmp_path / "bad.nsk"
    sparse_bomb(bad, n=(1 << 20) + 3, crc_xor=1)
    with pytest.raises(NetshrinkFormatError, match="checksum"):
        read_kept(bad)
