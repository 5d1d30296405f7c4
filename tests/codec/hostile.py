"""Hand-made hostile .nsk files: well-formed containers whose tensors are all zeros (a sparse entry
without entries, a few bytes whatever the shape) and whose document says what a test needs."""

import json
import zlib

import numpy as np
import safetensors.numpy

from netshrink.codec.document import pack_document
from netshrink.codec.validate import FORMAT_VERSION

_ZEROS = bytes(1 << 22)


def zeros_crc(nbytes: int) -> int:
    """CRC-32 of ``nbytes`` zero bytes."""
    crc = 0
    while nbytes:
        step = min(nbytes, len(_ZEROS))
        crc, nbytes = zlib.crc32(_ZEROS[:step], crc), nbytes - step
    return crc


def zeros_entry(shape, dtype="float32"):
    """A tensor entry of all zeros of ``shape``: no stream bytes at all."""
    size = {"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2, "int64": 8}[dtype]
    entry = {"shape": list(shape), "chain": "sparse+dense", "params": {"sparse": {"index_bits": 1, "entries": 0}},
             "streams": {"gaps": {"n": 0, "method": "none"}}, "crc": zeros_crc(size * int(np.prod(shape)))}
    if dtype != "float32":
        entry["dtype"] = dtype
    return entry


def write(path, shapes, log=(), arch=None, extra_metadata=None, deflate=True, **fields):
    """A file of all-zero tensors of ``shapes`` (name -> shape, or name -> (shape, dtype)) with the
    given transform log and architecture; returns its size in bytes."""
    tensors = {name: zeros_entry(*value) if isinstance(value, tuple) else zeros_entry(value)
               for name, value in shapes.items()}
    doc = {"format_version": FORMAT_VERSION, "tensors": tensors, **fields}
    if arch is not None:
        doc["architecture"] = arch
    if log:
        doc["transform_log"] = list(log)
    text = json.dumps(doc, separators=(",", ":"))
    metadata = {"netshrink": pack_document(text) if deflate else text, **(extra_metadata or {})}
    data = safetensors.numpy.save({"streams": np.zeros(0, dtype=np.uint8)}, metadata=metadata)
    path.write_bytes(data)
    return len(data)


def lenet_shapes(in_features, num_classes=10):
    """The state-dict shapes of ``lenet300_100(in_features, num_classes)``."""
    return {"fc1.weight": [300, in_features], "fc1.bias": [300], "fc2.weight": [100, 300], "fc2.bias": [100],
            "fc3.weight": [num_classes, 100], "fc3.bias": [num_classes]}
