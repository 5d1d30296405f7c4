"""Mutated .nsk files: only NetshrinkFormatError (or a successful load) comes out, each load with
bounded work: Python-level calls (a machine-independent count of operations) and peak memory."""

import json
import random
import struct
import tracemalloc

import pytest
import torch

from netshrink.codec.container import load, save
from netshrink.codec.document import read_document
from netshrink.core.errors import NetshrinkFormatError
from netshrink.models import create
from tests.codec.test_container import make_weight
from tests.codec.work import operations
from tests.models import UserResNet

#: a mutated file's load may make at most this many times the Python and C calls of the valid file's
OPERATIONS_FACTOR = 20
PEAK_BYTES_PER_LOAD = 64 * 2**20  # the valid files decode to well under 1 MiB
JUNK = [None, -1, 0, 1, 2**31, 2**64, -(2**63), 1.5, float("nan"), True, "x", "", [], {}, [1] * 9, {"a": 1}]


def _zoo_file(path):
    model = create("lenet300_100", in_features=64)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model.fc1.weight.copy_(make_weight("pruned_clustered", (300, 64), generator))
        model.fc2.weight.copy_(make_weight("int4", (100, 300), generator))
        model.fc3.weight.copy_(make_weight("binary", (10, 100), generator))
    save(model, path, entropy="auto", encodings={"fc1.weight": "sparse+codebook", "fc1.bias": "float_bytes"})
    return path, None


def _user_file(path):
    model = UserResNet()
    with torch.no_grad():
        model.pointwise.weight.copy_(make_weight("clustered16", (16, 16, 1, 1), torch.Generator().manual_seed(1)))
    save(model, path, entropy="huffman")
    return path, UserResNet


def _load(path, model) -> None:
    try:
        load(path, model=model)
    except NetshrinkFormatError as error:
        assert "\n" not in str(error)


def _load_checked(data: bytes, path, builder, max_operations: int) -> None:
    """Load a mutated file: a model or a one-line NetshrinkFormatError, with bounded operations and
    memory (numpy's allocations, where every decoder works, are traced by tracemalloc)."""
    path.write_bytes(data)
    model = builder() if builder else None
    tracemalloc.start()
    try:
        work = operations(lambda: _load(path, model))
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert work <= max_operations
    assert peak < PEAK_BYTES_PER_LOAD


def _split(data: bytes) -> tuple[dict, bytes]:
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + length]), data[8 + length :]


def _join(header: dict, body: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + body


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _paths(child, (*prefix, index))


def _mutations(data: bytes, rng: random.Random):
    for _ in range(25):  # truncation at random points
        yield data[: rng.randrange(len(data))]
    for _ in range(50):  # random bit flips
        flipped = bytearray(data)
        for _ in range(rng.choice([1, 1, 2, 8])):
            bit = rng.randrange(8 * len(data))
            flipped[bit // 8] ^= 1 << (bit % 8)
        yield bytes(flipped)
    header, body = _split(data)
    names = [k for k in header if k != "__metadata__"]
    for _ in range(25):  # huge lengths, wrong offsets, wrong shapes in the safetensors header
        edited = json.loads(json.dumps(header))
        entry = edited[rng.choice(names)]
        field = rng.choice(["data_offsets", "shape"])
        if field == "data_offsets":
            entry["data_offsets"] = rng.choice([[0, 2**62], [entry["data_offsets"][0] + 1, entry["data_offsets"][1]],
                                                [0, len(body)], [5, 3], [entry["data_offsets"][0], 2**40]])
        else:
            entry["shape"] = rng.choice([[2**40], [entry["shape"][0] + 1], [], [1, 2**33]])
        yield _join(edited, body)
    document = read_document(header["__metadata__"]["netshrink"])
    lengths = [p for p in _paths(document) if p and p[-1] == "n"]
    for _ in range(25):  # declared stream lengths off by a little, negative, huge or overflowing
        edited_doc = json.loads(json.dumps(document))
        for path in rng.sample(lengths, min(len(lengths), rng.choice([1, 2]))):
            parent = edited_doc
            for key in path[:-1]:
                parent = parent[key]
            parent["n"] = rng.choice([parent["n"] + 1, parent["n"] - 1, -1, 2**62, parent["n"] + 2**63,
                                      parent["n"] + 2**64, len(body)])
        edited = json.loads(json.dumps(header))
        edited["__metadata__"]["netshrink"] = json.dumps(edited_doc)
        yield _join(edited, body)
    for extra in (b"\0" * 8, b""):  # a second tensor, or stream data longer than declared
        edited = json.loads(json.dumps(header))
        end = edited["streams"]["data_offsets"][1]
        if extra:
            edited["extra"] = {"dtype": "U8", "shape": [8], "data_offsets": [end, end + 8]}
        else:
            edited["streams"].update(shape=[end + 8], data_offsets=[0, end + 8])
        yield _join(edited, body + b"\0" * 8)
    paths = [p for p in _paths(document) if p]
    for _ in range(80):  # edited fields of the netshrink document
        edited_doc = json.loads(json.dumps(document))
        path = rng.choice(paths)
        parent = edited_doc
        for key in path[:-1]:
            parent = parent[key]
        if rng.random() < 0.2 and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = rng.choice(JUNK)
        edited = json.loads(json.dumps(header))
        edited["__metadata__"]["netshrink"] = json.dumps(edited_doc)
        yield _join(edited, body)


@pytest.mark.parametrize("make", [_zoo_file, _user_file])
def test_mutated_files_only_raise_format_errors(make, tmp_path):
    path, builder = make(tmp_path / "valid.nsk")
    data = path.read_bytes()
    model = builder() if builder else None
    max_operations = OPERATIONS_FACTOR * operations(lambda: load(path, model=model))
    rng = random.Random(1234)
    for mutated in _mutations(data, rng):
        _load_checked(mutated, tmp_path / "mutated.nsk", builder, max_operations)
