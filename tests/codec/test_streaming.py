"""Format 5 streams: save writes a tensor at a time and load decodes a tensor at a time straight
into the model, so memory beside the model is bounded by one tensor, never by the file; bf16 and
fp16 stay in their own dtype. Memory is asserted as bytes allocated (the Python and numpy heap
through tracemalloc, torch tensors through a dispatch mode), never as seconds."""

import json
import struct

import numpy as np
import pytest
import torch
from safetensors import safe_open
from torch import nn

from netshrink.codec.container import load, read_kept, save
from netshrink.codec.stream_file import StreamReader, StreamWriter
from netshrink.codec.tensor_encodings import SAMPLE_ELEMENTS
from tests.codec.work import bounded, torch_allocated

LAYERS, WIDTH = 8, 384  # 576 KiB fp32 weights, each above the default effort's sample size


def stack(dtype=torch.float32, seed=0, layers=LAYERS):
    torch.manual_seed(seed)
    return nn.Sequential(*[nn.Linear(WIDTH, WIDTH) for _ in range(layers)]).to(dtype)


def chains(path):
    with safe_open(str(path), framework="numpy") as handle:
        from netshrink.codec.document import read_document

        doc = read_document(handle.metadata()["netshrink"])
    return doc, {name: entry.get("chain", "dense") for name, entry in doc["tensors"].items()}


def heap_peak(call):
    """Peak bytes of the Python and numpy heap while ``call()`` runs."""
    import tracemalloc

    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def largest_torch_output(call):
    from tests.codec.work import TorchOps

    with TorchOps() as ops:
        call()
    return max((numel for _, _, numel in ops.outputs), default=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_save_holds_one_tensor_at_a_time(tmp_path, dtype):
    """Four times the layers, the same peak: streams go to the file as each tensor is encoded,
    and no torch op copies a weight (each is written from its own memory)."""
    small, large = stack(dtype, layers=2), stack(dtype, layers=8)
    peaks = [heap_peak(lambda model=model: save(model, tmp_path / "m.nsk")) for model in (small, large)]
    assert peaks[1] < peaks[0] + (1 << 20), peaks
    assert largest_torch_output(lambda: save(small, tmp_path / "m.nsk")) < WIDTH * WIDTH


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_load_decodes_into_the_model_in_its_own_dtype(tmp_path, dtype):
    saved = stack(dtype)
    save(saved, tmp_path / "m.nsk")
    fresh = stack(dtype, seed=1)
    allocated = []
    bounded(lambda: allocated.append(torch_allocated(lambda: load(tmp_path / "m.nsk", model=fresh))),
            limit_bytes=4 * WIDTH * WIDTH * saved[0].weight.element_size() + (4 << 20))
    assert allocated[0] < 1 << 16  # written into the parameters: no tensor of a weight's size made
    save(stack(dtype, layers=2), tmp_path / "2.nsk")
    peaks = [heap_peak(lambda name=name, layers=layers: load(tmp_path / name, model=stack(dtype, layers=layers)))
             for name, layers in (("2.nsk", 2), ("m.nsk", LAYERS))]
    assert peaks[1] < peaks[0] + (1 << 20), peaks
    for name, tensor in saved.state_dict().items():
        assert fresh.state_dict()[name].dtype == dtype and torch.equal(fresh.state_dict()[name], tensor)


def test_bf16_is_never_widened_to_fp32(tmp_path):
    """bf16 tensors are split into planes and read back as 16-bit words: no float32 copy."""
    from tests.codec.work import TorchOps

    model, fresh = stack(torch.bfloat16, layers=2), stack(torch.bfloat16, seed=1, layers=2)
    with TorchOps() as ops:
        save(model, tmp_path / "m.nsk")
        load(tmp_path / "m.nsk", model=fresh)
    assert not [op for op, dtype, numel in ops.outputs if dtype == torch.float32 and numel > 4096]


def test_default_effort_keeps_dense_fp32_raw_and_codes_bf16_planes(tmp_path):
    model = stack(layers=2)
    save(model, tmp_path / "fp32.nsk")
    assert set(chains(tmp_path / "fp32.nsk")[1].values()) <= {"dense", "float_bytes"}
    assert chains(tmp_path / "fp32.nsk")[1]["0.weight"] == "dense"  # 16% smaller coded, not worth it
    save(model.to(torch.bfloat16), tmp_path / "bf16.nsk")
    assert chains(tmp_path / "bf16.nsk")[1]["0.weight"] == "float_bytes"  # a third smaller
    save(model.float(), tmp_path / "max.nsk", effort="max")
    assert chains(tmp_path / "max.nsk")[1]["0.weight"] == "float_bytes"  # every byte the coders save
    assert (tmp_path / "max.nsk").stat().st_size < (tmp_path / "fp32.nsk").stat().st_size


def test_default_effort_never_codes_fp32_planes_even_where_they_save_much(tmp_path, monkeypatch):
    """fp32 weights holding bf16 values: half of each value's bytes are zero, so the planes save
    more than ``MIN_SAVING``, but they decode at entropy-coder speed; the default stores them raw."""
    import netshrink.codec.tensor_encodings as tensor_encodings

    model = stack(layers=2).to(torch.bfloat16).float()
    save(model, tmp_path / "default.nsk")
    assert chains(tmp_path / "default.nsk")[1]["0.weight"] == "dense"
    save(model, tmp_path / "max.nsk", effort="max")
    assert chains(tmp_path / "max.nsk")[1]["0.weight"] == "float_bytes"
    monkeypatch.setattr(tensor_encodings, "PLANES_MAX_ITEMSIZE", 4)  # the width rule is what decides
    save(model, tmp_path / "wide.nsk")
    assert chains(tmp_path / "wide.nsk")[1]["0.weight"] == "float_bytes"


def test_the_sample_decides_sparse_and_shared_weights(tmp_path):
    model = stack(layers=2)
    with torch.no_grad():
        for layer in model:
            values = torch.linspace(-1, 1, 16)[torch.randint(0, 16, layer.weight.shape)]
            layer.weight.copy_(values * (torch.rand(layer.weight.shape) < 0.3))
    assert model[0].weight.numel() > SAMPLE_ELEMENTS
    save(model, tmp_path / "m.nsk")
    default_size = (tmp_path / "m.nsk").stat().st_size
    assert chains(tmp_path / "m.nsk")[1]["0.weight"] in ("codebook", "sparse+codebook")
    save(model, tmp_path / "max.nsk", effort="max")
    assert default_size <= 1.01 * (tmp_path / "max.nsk").stat().st_size
    fresh = stack(seed=2, layers=2)
    assert torch.equal(load(tmp_path / "m.nsk", model=fresh)[1].weight, model[1].weight)


def test_inspect_reads_a_tensor_at_a_time(tmp_path):
    save(stack(), tmp_path / "m.nsk")
    bounded(lambda: read_kept(tmp_path / "m.nsk"), limit_bytes=2 * WIDTH * WIDTH * 4 + (4 << 20))


@pytest.mark.parametrize("reserve, metadata_bytes", [(64, 10_000), (100_000, 10), (200, 150)])
def test_the_header_is_filled_in_place_or_the_streams_move(tmp_path, reserve, metadata_bytes, monkeypatch):
    """A header larger than its reservation moves the streams up; much smaller, down (a small
    file stays small); the result is a valid safetensors file either way."""
    import netshrink.codec.stream_file as stream_file

    monkeypatch.setattr(stream_file, "CHUNK_BYTES", 4096)  # several chunks to move
    data = np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8)
    path = tmp_path / "s.nsk"
    with StreamWriter(path, "streams", reserve) as writer:
        writer.write(data[:20_000])
        writer.write(memoryview(data[20_000:]))
        writer.finish({"netshrink": "x" * metadata_bytes})
    raw = path.read_bytes()
    header = struct.unpack("<Q", raw[:8])[0]
    assert len(raw) == 8 + header + data.size and (8 + header) % 8 == 0
    assert header - len(json.dumps({"__metadata__": {"netshrink": "x" * metadata_bytes}})) < 200
    with safe_open(str(path), framework="numpy") as handle:
        assert handle.metadata()["netshrink"] == "x" * metadata_bytes
        assert np.array_equal(handle.get_tensor("streams"), data)
    with StreamReader(path, "streams") as reader:
        target = np.zeros(30_000, dtype=np.uint8)
        crc = reader.read_into(10_000, memoryview(target))
        assert np.array_equal(target, data[10_000:40_000])
        import zlib

        assert crc == zlib.crc32(data[10_000:40_000].tobytes())


def test_a_large_read_is_checksummed_in_pieces_combined(tmp_path, monkeypatch):
    import zlib

    import netshrink.codec.stream_file as stream_file

    monkeypatch.setattr(stream_file, "CHUNK_BYTES", 1024)
    monkeypatch.setattr(stream_file, "threads", lambda: 3)
    data = np.random.default_rng(1).integers(0, 256, 100_003, dtype=np.uint8)
    with StreamWriter(tmp_path / "s.nsk", "streams", 100) as writer:
        writer.write(data)
        writer.finish({"netshrink": "{}"})
    with StreamReader(tmp_path / "s.nsk", "streams") as reader:
        target = np.empty_like(data)
        assert reader.read_into(0, memoryview(target)) == zlib.crc32(data.tobytes())
        assert np.array_equal(target, data)


def test_non_persistent_buffers_are_left_as_they_are(tmp_path):
    class Positions(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(3, 3)
            self.register_buffer("positions", torch.arange(3), persistent=False)

    saved = Positions()
    save(saved, tmp_path / "p.nsk")
    loaded = load(tmp_path / "p.nsk", model=Positions())
    assert torch.equal(loaded.positions, torch.arange(3)) and torch.equal(loaded.linear.weight, saved.linear.weight)


def test_a_forked_child_gets_a_pool_of_its_own(tmp_path):
    """The parent's pool threads do not survive a fork: a child that coded floats on them would
    wait forever."""
    import multiprocessing

    from netshrink.codec.threads import pool

    pool().submit(lambda: None).result()  # the parent's pool is running
    save(stack(torch.bfloat16, layers=1), tmp_path / "parent.nsk")
    context = multiprocessing.get_context("fork")
    child = context.Process(target=save, args=(stack(torch.bfloat16, layers=1), tmp_path / "child.nsk"))
    child.start()
    child.join(120)
    assert child.exitcode == 0 and (tmp_path / "child.nsk").exists()
