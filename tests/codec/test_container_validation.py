"""Hand-made bad .nsk files: one per validation rule, each refused with NetshrinkFormatError."""

import json
import struct
import zlib

import numpy as np
import pytest
import safetensors.numpy
from safetensors import safe_open
from torch import nn

from netshrink.codec.container import load, read_tensors, save
from netshrink.codec.document import read_document
from netshrink.codec.validate import validate_document
from netshrink.core.errors import NetshrinkFormatError
from netshrink.models import create
from tests.codec.test_container import fill_weights
from tests.models import UserMLP


def valid_file(tmp_path, kind="clustered16", entropy="auto"):
    model = create("lenet300_100", in_features=64)
    fill_weights(model, kind)
    path = tmp_path / "ok.nsk"
    save(model, path, entropy=entropy)
    return path


def read(path):
    """The document and the file's tensors (normally the one ``"streams"`` tensor)."""
    with safe_open(str(path), framework="numpy") as handle:
        doc = read_document(handle.metadata()["netshrink"])
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    return doc, tensors


def write(path, doc, tensors, raw_metadata=None):
    text = raw_metadata if raw_metadata is not None else json.dumps(doc)
    path.write_bytes(safetensors.numpy.save(tensors, metadata={"netshrink": text}))
    return path


def edited(tmp_path, edit, kind="clustered16", entropy="auto"):
    """A valid file whose document and tensors went through ``edit(doc, tensors)``."""
    doc, tensors = read(valid_file(tmp_path, kind, entropy))
    edit(doc, tensors)
    return write(tmp_path / "bad.nsk", doc, tensors)


def refused(path, match, model=None):
    with pytest.raises(NetshrinkFormatError, match=match) as info:
        load(path, model=model)
    assert "\n" not in str(info.value)


def span(doc, tensors, name, role):
    """Where a stream of the valid file lies in the ``"streams"`` tensor."""
    stream = validate_document(doc, tensors["streams"].size)[name].streams[role]
    return slice(stream.offset, stream.offset + stream.nbytes)


def restamp(doc, tensors):
    """Recompute the stream checksum (format versions 2 to 4) after the stream bytes were edited on
    purpose; version 5 has none."""
    if "stream_crc" in doc:
        doc["stream_crc"] = zlib.crc32(tensors["streams"].tobytes())


def as_version_4(doc, tensors):
    """The document as format version 4 wrote it: with the checksum of all the stream bytes."""
    doc["format_version"] = 4
    doc["stream_crc"] = zlib.crc32(tensors["streams"].tobytes())


def test_missing_file(tmp_path):
    refused(tmp_path / "nothing.nsk", "cannot read")


def test_file_too_small(tmp_path):
    (tmp_path / "tiny.nsk").write_bytes(b"abc")
    refused(tmp_path / "tiny.nsk", "not a netshrink file: 3 bytes is too short")


def test_a_text_file_renamed_nsk_says_it_is_not_safetensors(tmp_path):
    """A 17-byte text file used to be refused as "header too large"; say what the file is not."""
    path = tmp_path / "notes.nsk"
    path.write_bytes(b"just some notes.\n")
    assert path.stat().st_size == 17
    refused(path, "not a netshrink file: not safetensors")


def test_garbage_header(tmp_path):
    (tmp_path / "g.nsk").write_bytes(struct.pack("<Q", 40) + b"{not json at all" + b" " * 24)
    refused(tmp_path / "g.nsk", "safetensors")


def test_header_length_beyond_file(tmp_path):
    data = valid_file(tmp_path).read_bytes()
    (tmp_path / "h.nsk").write_bytes(struct.pack("<Q", 2**40) + data[8:])
    refused(tmp_path / "h.nsk", "safetensors")


def test_truncated_file(tmp_path):
    data = valid_file(tmp_path).read_bytes()
    (tmp_path / "t.nsk").write_bytes(data[:-5])
    refused(tmp_path / "t.nsk", "safetensors")


def test_plain_safetensors_without_document(tmp_path):
    safetensors.numpy.save_file({"w": np.zeros(3, np.float32)}, tmp_path / "plain.nsk")
    refused(tmp_path / "plain.nsk", "not a netshrink file")


def test_metadata_not_json(tmp_path):
    doc, streams = read(valid_file(tmp_path))
    refused(write(tmp_path / "bad.nsk", doc, streams, raw_metadata="{broken"), "not valid JSON")


def test_metadata_not_an_object(tmp_path):
    doc, streams = read(valid_file(tmp_path))
    refused(write(tmp_path / "bad.nsk", doc, streams, raw_metadata="[1, 2]"), "JSON object")


def test_unknown_format_version(tmp_path):
    refused(edited(tmp_path, lambda d, s: d.update(format_version=99)), "format_version")


def test_format_version_1_is_refused(tmp_path):
    refused(edited(tmp_path, lambda d, s: d.update(format_version=1)), "reads versions 2, 3, 4, 5, 6 only")


def test_unknown_encoding(tmp_path):
    refused(edited(tmp_path, lambda d, s: d["tensors"]["fc1.weight"].update(chain="zip")),
            "unknown encoding")


def test_chain_must_be_a_name(tmp_path):
    refused(edited(tmp_path, lambda d, s: d["tensors"]["fc1.weight"].update(chain=["codebook"])),
            "unknown encoding")


def test_unknown_dtype(tmp_path):
    refused(edited(tmp_path, lambda d, s: d["tensors"]["fc1.bias"].update(dtype="complex64")),
            "unknown dtype")


def test_unknown_entropy_method(tmp_path):
    def edit(doc, streams):
        doc["tensors"]["fc1.weight"]["streams"]["indices"]["method"] = "lzma"

    refused(edited(tmp_path, edit), "entropy method")


def test_coded_stream_not_declared(tmp_path):
    refused(edited(tmp_path, lambda d, s: d["tensors"]["fc1.weight"]["streams"].pop("indices")), "declares streams")


def test_raw_stream_declared(tmp_path):
    refused(edited(tmp_path, lambda d, s: d["tensors"]["fc1.bias"].update(streams={"raw": {"n": 1200}})),
            "declares streams")


def test_declared_length_longer_than_stream_data(tmp_path):
    def edit(doc, tensors):
        doc["tensors"]["fc3.weight"]["streams"]["indices"]["n"] += 1  # the last tensor's stream

    refused(edited(tmp_path, edit), "past the end")


def test_declared_length_shorter_than_stream_data(tmp_path):
    def edit(doc, tensors):
        doc["tensors"]["fc1.weight"]["streams"]["indices"]["n"] -= 1

    refused(edited(tmp_path, edit), "declare .* in all|more than its 9599 bytes can hold")


def test_negative_declared_length(tmp_path):
    def edit(doc, tensors):
        doc["tensors"]["fc1.weight"]["streams"]["indices"]["n"] = -4

    refused(edited(tmp_path, edit), "length")


def test_huge_declared_length(tmp_path):
    def edit(doc, tensors):
        doc["tensors"]["fc1.weight"]["streams"]["indices"]["n"] = 2**62

    refused(edited(tmp_path, edit), "past the end")


def test_lengths_that_overflow_64_bits_to_the_right_total(tmp_path):
    def edit(doc, tensors):  # two lengths whose uint64 sum wraps around to the true total
        doc["tensors"]["fc1.weight"]["streams"]["indices"]["n"] += 2**63
        doc["tensors"]["fc2.weight"]["streams"]["indices"]["n"] += 2**63

    refused(edited(tmp_path, edit), "length must be|past the end")


def test_stream_data_shorter_than_declared(tmp_path):
    def edit(doc, tensors):
        tensors["streams"] = tensors["streams"][:-3]
        restamp(doc, tensors)

    refused(edited(tmp_path, edit), "past the end")


def test_stream_data_longer_than_declared(tmp_path):
    def edit(doc, tensors):
        tensors["streams"] = np.concatenate([tensors["streams"], np.zeros(3, np.uint8)])
        restamp(doc, tensors)

    refused(edited(tmp_path, edit), "declare .* in all")


def test_second_unknown_tensor(tmp_path):
    refused(edited(tmp_path, lambda d, s: s.update({"extra": np.zeros(4, np.uint8)})), "exactly one tensor")


def test_no_streams_tensor(tmp_path):
    refused(edited(tmp_path, lambda d, s: s.clear()), "exactly one tensor")


def test_streams_tensor_not_bytes(tmp_path):
    def edit(doc, tensors):
        tensors["streams"] = tensors["streams"][:-(tensors["streams"].size % 4) or None].view(np.float32)

    refused(edited(tmp_path, edit), "uint8")


def test_streams_tensor_not_one_dimensional(tmp_path):
    def edit(doc, tensors):
        tensors["streams"] = tensors["streams"].reshape(1, -1)

    refused(edited(tmp_path, edit), "1-D")


def test_raw_stream_length_follows_the_shape(tmp_path):
    refused(edited(tmp_path, lambda d, s: d["tensors"]["fc1.bias"].update(shape=[299])), "declare .* in all")


def test_negative_dimension(tmp_path):
    refused(edited(tmp_path, lambda d, s: d["tensors"]["fc1.bias"].update(shape=[-300])), "shape")


def test_non_integer_dimension(tmp_path):
    refused(edited(tmp_path, lambda d, s: d["tensors"]["fc1.bias"].update(shape=[300.0])), "shape")


def test_decompression_bomb_shape(tmp_path):
    refused(edited(tmp_path, lambda d, s: d["tensors"]["fc1.weight"].update(shape=[2**20, 2**20])),
            "elements")


def test_sparse_entries_beyond_numel(tmp_path):
    def edit(doc, streams):
        doc["tensors"]["fc1.weight"]["params"]["sparse"]["entries"] = 10**9

    refused(edited(tmp_path, edit, kind="pruned_clustered", entropy="none"), "entries")


def test_int_bits_out_of_range(tmp_path):
    refused(edited(tmp_path, lambda d, s: d["tensors"]["fc1.weight"]["params"]["int"].update(bits=17),
                   kind="int4"), "int bits")


def test_index_beyond_codebook(tmp_path):
    def edit(doc, tensors):
        entry = doc["tensors"]["fc1.weight"]
        codebook = span(doc, tensors, "fc1.weight", "codebook")
        entry["params"]["codebook"]["size"] -= 1
        tensors["streams"] = np.delete(tensors["streams"], np.arange(codebook.stop - 4, codebook.stop))
        restamp(doc, tensors)

    refused(edited(tmp_path, edit, entropy="none"), "codebook|alphabet|symbol")


def test_stream_checksum_mismatch(tmp_path):
    def edit(doc, tensors):
        as_version_4(doc, tensors)
        data = tensors["streams"].copy()
        data[span(doc, tensors, "fc1.bias", "raw").start] ^= 1
        tensors["streams"] = data

    refused(edited(tmp_path, edit), "stream checksum")


def test_decoded_checksum_mismatch(tmp_path):
    refused(edited(tmp_path, lambda d, s: d["tensors"]["fc2.bias"].update(crc=d["tensors"]["fc2.bias"]["crc"] ^ 1)),
            "decoded tensor")


def test_state_dict_mismatch_with_given_model(tmp_path):
    refused(valid_file(tmp_path), "does not fit", model=UserMLP())


def test_architecture_kwargs_change_shapes(tmp_path):
    refused(edited(tmp_path, lambda d, s: d["architecture"]["kwargs"].update(in_features=32)), "does not fit")


def test_architecture_not_in_zoo(tmp_path):
    refused(edited(tmp_path, lambda d, s: d["architecture"].update(name="os.system")), "not in the model zoo")


def test_architecture_bad_kwargs(tmp_path):
    refused(edited(tmp_path, lambda d, s: d["architecture"]["kwargs"].update(evil=1)), "cannot build")


def test_user_model_without_builder(tmp_path):
    save(UserMLP(), tmp_path / "u.nsk")
    refused(tmp_path / "u.nsk", "model=")


def test_unknown_verb_in_log(tmp_path):
    refused(edited(tmp_path, lambda d, s: d.update(transform_log=[{"verb": "exec", "config": None}])),
            "unknown verb")


def test_log_not_a_list(tmp_path):
    refused(edited(tmp_path, lambda d, s: d.update(transform_log={"verb": "x"})), "transform_log")


def test_missing_checksum(tmp_path):
    refused(edited(tmp_path, lambda d, s: d["tensors"]["fc1.bias"].pop("crc")), "crc")


def test_missing_stream_checksum(tmp_path):
    refused(edited(tmp_path, lambda d, s: (as_version_4(d, s), d.pop("stream_crc"))), "stream_crc")


def test_version_5_has_no_stream_checksum(tmp_path):
    refused(edited(tmp_path, lambda d, s: d.update(stream_crc=0)), "has no stream_crc")


def test_version_4_files_are_still_read(tmp_path):
    path = valid_file(tmp_path)
    current = load(path).state_dict()
    doc, tensors = read(path)
    as_version_4(doc, tensors)
    older = load(write(tmp_path / "v4.nsk", doc, tensors)).state_dict()
    assert current.keys() == older.keys() and all(older[name].equal(value) for name, value in current.items())


def test_bad_entropy_params_are_a_format_error(tmp_path):
    def edit(doc, streams):
        doc["tensors"]["fc1.weight"]["streams"]["indices"]["params"] = {"junk": [1, 2, 3]}

    refused(edited(tmp_path, edit, entropy="ans"), "fc1.weight")


def test_model_without_tensors_has_an_empty_streams_tensor(tmp_path):
    save(nn.Module(), tmp_path / "empty.nsk")
    doc, tensors = read(tmp_path / "empty.nsk")
    assert doc["tensors"] == {} and tensors["streams"].shape == (0,)
    assert load(tmp_path / "empty.nsk", model=nn.Module()).state_dict() == {}
    assert read_tensors(tmp_path / "empty.nsk")[2] == {}
