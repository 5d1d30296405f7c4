"""Regressions: the small hostile files of issue 6 each become a fast one-line NetshrinkFormatError
(or, for a valid but adversarial layout, a bounded decode). Work is asserted as operations
(Python and C calls) and memory (tracemalloc), never as seconds."""

import json
import re
import zlib

import numpy as np
import pytest
import safetensors.numpy

from netshrink.codec.container import load, read_tensors
from netshrink.codec.huffman import huffman_encode
from netshrink.codec.validate import FORMAT_VERSION, params_limit
from netshrink.core.errors import NetshrinkFormatError
from tests.codec.work import bounded, operations

#: a refused hostile file takes about as many calls as validating its document
REFUSAL_OPERATIONS = 20_000


def write(path, tensors, body=b"", arch=None):
    doc = {"format_version": FORMAT_VERSION, "tensors": tensors}
    if arch is not None:
        doc["architecture"] = arch
    data = safetensors.numpy.save({"streams": np.frombuffer(body, dtype=np.uint8)},
                                  metadata={"netshrink": json.dumps(doc, separators=(",", ":"))})
    path.write_bytes(data)
    return len(data)


def refused_quickly(call, match):
    """``call()`` raises a one-line NetshrinkFormatError matching ``match``, with few operations
    and under 16 MiB of traced memory."""
    errors = []

    def attempt():
        try:
            call()
        except NetshrinkFormatError as error:
            errors.append(error)

    work = bounded(lambda: operations(attempt), limit_bytes=16 * 2 ** 20)
    assert errors, "the file was not refused"
    assert "\n" not in str(errors[0]) and re.search(match, str(errors[0])), str(errors[0])
    assert work < REFUSAL_OPERATIONS, work


def empty_sparse(shape):
    return {"shape": shape, "chain": "sparse+dense", "params": {"sparse": {"index_bits": 1, "entries": 0}},
            "streams": {"gaps": {"n": 0, "method": "none"}}, "crc": 0}


def test_a_small_file_cannot_make_load_build_a_huge_zoo_model(tmp_path):
    """1.4 KB naming lenet300_100(in_features=1000000) with empty sparse tensors of the very shapes
    that model has: load() used to build and fill 300M parameters (85 s). The file's own shapes
    agree with its architecture, so the bound must come from its real bytes: max_params."""
    shapes = {"fc1.weight": [300, 1_000_000], "fc1.bias": [300], "fc2.weight": [100, 300], "fc2.bias": [100],
              "fc3.weight": [10, 100], "fc3.bias": [10]}
    path = tmp_path / "huge.nsk"
    size = write(path, {name: empty_sparse(shape) for name, shape in shapes.items()},
                 arch={"name": "lenet300_100", "kwargs": {"in_features": 1_000_000}})
    assert size < 1500
    assert params_limit(size) < 300_000_000
    refused_quickly(lambda: load(path), "max_params")
    refused_quickly(lambda: read_tensors(path, max_decoded_bytes=None), "max_params")


def float_planes_file(path, n, counts_per_plane):
    planes = [{"method": "ans", "params": {"counts": counts}, "size": 0} for counts in counts_per_plane]
    entry = {"shape": [n], "chain": "float_bytes",
             "streams": {"float": {"n": 0, "params": {"dtype": "float32", "planes": planes}}}, "crc": 0}
    return write(path, {"w": entry})


def test_empty_ans_planes_of_a_huge_float_tensor_are_refused(tmp_path):
    """2.6 KB declaring a 256 MiB float tensor as four ANS planes with empty payloads: reading took
    491 s and 4.7 GiB. With two used symbols a plane's empty payload can hold no symbol at all;
    with one used symbol (a constant tensor, honestly free in ANS) the element bound and the
    decoded-bytes cap, which counts the decoder's intermediates, refuse it."""
    n = 1 << 26  # 64M float32: 256 MiB
    two_symbols = [[n - 1, 1] + [0] * 254] * 4
    path = tmp_path / "planes.nsk"
    assert float_planes_file(path, n, two_symbols) < 3000
    refused_quickly(lambda: read_tensors(path), "max_params")
    refused_quickly(lambda: read_tensors(path, max_params=n, max_decoded_bytes=None), "cannot hold")
    one_symbol = [[n] + [0] * 255] * 4
    assert float_planes_file(path, n, one_symbol) < 3000
    refused_quickly(lambda: read_tensors(path), "max_params")
    refused_quickly(lambda: read_tensors(path, max_params=n), "max_decoded_bytes")  # 256 MiB + planes > 1 GiB


def test_many_single_block_huffman_tensors_decode_with_bounded_work(tmp_path):
    """68 KB: 8 tensors whose codebook indices are one 65,536-symbol Huffman block each took 38 s
    to read (one Python step per symbol). A few blocks now decode in C, one call per block."""
    n, tensors, body, expected = 65_536, {}, b"", {}
    rng = np.random.default_rng(0)
    book = np.array([0.5, -0.25], dtype=np.float32)
    for index in range(8):
        symbols = rng.integers(0, 2, n)
        payload, params = huffman_encode(symbols, 2, block_size=n)
        values = book[symbols]
        tensors[f"t{index}"] = {"shape": [n], "chain": "codebook", "params": {"codebook": {"size": 2}},
                                "streams": {"indices": {"n": len(payload), "method": "huffman", "params": params}},
                                "crc": zlib.crc32(values.tobytes())}
        body += book.tobytes() + payload
        expected[f"t{index}"] = values
    path = tmp_path / "blocks.nsk"
    assert 60_000 < write(path, tensors, body) < 80_000
    result = {}
    work = operations(lambda: result.update(read_tensors(path)[2]))
    assert work < 8 * 2_000  # was over 8 * 65,536 * 8 numpy calls
    for name, values in expected.items():
        assert np.array_equal(result[name].numpy(), values)


def test_the_zoo_build_is_bounded_by_the_readers_budget_too():
    """Besides the file's own shapes (at most BUILD_RATIO times larger before its log is replayed),
    the model built for a file never exceeds the reader's max_params."""
    from netshrink.core.errors import ConfigError
    from netshrink.models import create_matching

    shapes = {"fc1.weight": (300, 64), "fc1.bias": (300,), "fc2.weight": (100, 300), "fc2.bias": (100,),
              "fc3.weight": (10, 100), "fc3.bias": (10,)}
    assert create_matching("lenet300_100", {"in_features": 64}, shapes, max_elements=60_000) is not None
    with pytest.raises(ConfigError, match="elements"):
        create_matching("lenet300_100", {"in_features": 64}, shapes, max_elements=50_000)
