"""Hand-made bad .nsk files: one per validation rule, each refused with NetshrinkFormatError."""

import json
import struct
import zlib

import numpy as np
import pytest
import safetensors.numpy
from safetensors import safe_open

from netshrink.codec.container import load, save
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
    with safe_open(str(path), framework="numpy") as handle:
        doc = json.loads(handle.metadata()["netshrink"])
        streams = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    return doc, streams


def write(path, doc, streams, raw_metadata=None):
    text = raw_metadata if raw_metadata is not None else json.dumps(doc)
    path.write_bytes(safetensors.numpy.save(streams, metadata={"netshrink": text}))
    return path


def edited(tmp_path, edit, kind="clustered16", entropy="auto"):
    """A valid file whose document and streams went through ``edit(doc, streams)``."""
    doc, streams = read(valid_file(tmp_path, kind, entropy))
    edit(doc, streams)
    return write(tmp_path / "bad.nsk", doc, streams)


def refused(path, match, model=None):
    with pytest.raises(NetshrinkFormatError, match=match) as info:
        load(path, model=model)
    assert "\n" not in str(info.value)


def restamp(doc, streams, name):
    """Recompute a tensor's stream checksum after its streams were edited on purpose."""
    entry = doc["tensors"][name]
    roles = list(entry["streams"])
    crc = 0
    for role in roles:
        crc = zlib.crc32(streams[f"{name}:{role}"].tobytes(), crc)
    entry["stream_crc"] = crc


def test_missing_file(tmp_path):
    refused(tmp_path / "nothing.nsk", "cannot read")


def test_file_too_small(tmp_path):
    (tmp_path / "tiny.nsk").write_bytes(b"abc")
    refused(tmp_path / "tiny.nsk", "file size")


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


def test_unknown_encoding(tmp_path):
    refused(edited(tmp_path, lambda d, s: d["tensors"]["fc1.weight"].update(chain=["zip"])),
            "unknown encoding")


def test_unknown_dtype(tmp_path):
    refused(edited(tmp_path, lambda d, s: d["tensors"]["fc1.bias"].update(dtype="complex64")),
            "unknown dtype")


def test_unknown_entropy_method(tmp_path):
    def edit(doc, streams):
        doc["tensors"]["fc1.weight"]["streams"]["indices"]["method"] = "lzma"

    refused(edited(tmp_path, edit), "entropy method")


def test_referenced_stream_missing(tmp_path):
    refused(edited(tmp_path, lambda d, s: s.pop("fc1.weight:indices")), "missing")


def test_declared_stream_length_differs(tmp_path):
    def edit(doc, streams):
        doc["tensors"]["fc1.weight"]["streams"]["indices"]["n"] += 1

    refused(edited(tmp_path, edit), "declares")


def test_huge_declared_length(tmp_path):
    def edit(doc, streams):
        doc["tensors"]["fc1.weight"]["streams"]["indices"]["n"] = 2**62

    refused(edited(tmp_path, edit), "declares")


def test_unreferenced_stream(tmp_path):
    refused(edited(tmp_path, lambda d, s: s.update({"extra": np.zeros(4, np.uint8)})), "no tensor references")


def test_stream_not_bytes(tmp_path):
    def edit(doc, streams):
        streams["fc1.bias:raw"] = streams["fc1.bias:raw"].view(np.float32)

    refused(edited(tmp_path, edit), "uint8")


def test_wrong_raw_stream_length_for_shape(tmp_path):
    def edit(doc, streams):
        streams["fc1.bias:raw"] = streams["fc1.bias:raw"][:-4]
        doc["tensors"]["fc1.bias"]["streams"]["raw"]["n"] -= 4

    refused(edited(tmp_path, edit), "needs")


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
    def edit(doc, streams):
        entry = doc["tensors"]["fc1.weight"]
        entry["params"]["codebook"]["size"] -= 1
        streams["fc1.weight:codebook"] = streams["fc1.weight:codebook"][:-4]
        entry["streams"]["codebook"]["n"] -= 4
        restamp(doc, streams, "fc1.weight")

    refused(edited(tmp_path, edit, entropy="none"), "codebook|alphabet|symbol")


def test_stream_checksum_mismatch(tmp_path):
    def edit(doc, streams):
        data = streams["fc1.bias:raw"].copy()
        data[0] ^= 1
        streams["fc1.bias:raw"] = data

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
    refused(edited(tmp_path, lambda d, s: d["transform_log"].append({"verb": "exec", "config": None})),
            "unknown verb")


def test_log_not_a_list(tmp_path):
    refused(edited(tmp_path, lambda d, s: d.update(transform_log={"verb": "x"})), "transform_log")


def test_missing_checksum(tmp_path):
    refused(edited(tmp_path, lambda d, s: d["tensors"]["fc1.bias"].pop("crc")), "crc")


def test_bad_entropy_params_are_a_format_error(tmp_path):
    def edit(doc, streams):
        doc["tensors"]["fc1.weight"]["streams"]["indices"]["params"] = {"junk": [1, 2, 3]}

    refused(edited(tmp_path, edit, entropy="ans"), "fc1.weight")
