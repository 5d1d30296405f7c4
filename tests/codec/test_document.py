"""The stored metadata document: deflated when shorter, read back within bounds, plain JSON still read."""

import base64
import json
import zlib

import pytest
import safetensors.numpy
import torch
from safetensors import safe_open

from netshrink.codec.container import load, save
from netshrink.codec.document import MAX_DOCUMENT_BYTES, inflation_cap, pack_document, read_document
from netshrink.core.errors import NetshrinkFormatError
from netshrink.models import create
from tests.codec.test_container import fill_weights
from tests.codec.work import bounded


def stored_document(path):
    with safe_open(str(path), framework="numpy") as handle:
        return handle.metadata()["netshrink"], handle.get_tensor("streams")


def rewritten(path, stored, streams):
    path.write_bytes(safetensors.numpy.save({"streams": streams}, metadata={"netshrink": stored}))
    return path


def wrapped(deflated: bytes, **extra) -> str:
    return json.dumps({"format_version": 4, "deflated": base64.b64encode(deflated).decode(), **extra})


def test_pack_round_trips_names_its_version_and_keeps_short_text_plain():
    document = {"tensors": {f"layer{i}.weight": {"shape": [300, 784], "crc": 7919 * i} for i in range(40)}}
    text = json.dumps(document)
    packed = pack_document(text)
    assert len(packed) < len(text) / 2
    assert json.loads(packed)["format_version"] == 4  # an older reader names the version it lacks
    assert read_document(packed) == document
    assert pack_document('{"a":1}') == '{"a":1}'  # deflating would make it longer


def test_a_document_the_reader_would_refuse_deflated_is_stored_plain():
    text = json.dumps({"w" * (2 * MAX_DOCUMENT_BYTES): 1})  # compresses far more than the reader admits
    assert len(text.encode()) > inflation_cap(len(zlib.compress(text.encode(), 9)))
    assert pack_document(text) == text


def test_saved_file_is_smaller_than_with_a_plain_document_and_loads_the_same(tmp_path):
    model = create("lenet300_100", in_features=64)
    fill_weights(model, "clustered16")
    save(model, tmp_path / "m.nsk")
    stored, streams = stored_document(tmp_path / "m.nsk")
    assert "deflated" in json.loads(stored)
    plain = rewritten(tmp_path / "plain.nsk", json.dumps(read_document(stored)), streams)  # as version 3 stored it
    assert (tmp_path / "m.nsk").stat().st_size < plain.stat().st_size
    x = torch.randn(5, 64)
    assert load(tmp_path / "m.nsk")(x).equal(load(plain)(x))


@pytest.mark.parametrize("payload, match", [
    (json.dumps({"format_version": 4, "deflated": "not base64!"}), "not valid base64"),
    (wrapped(b"not deflate at all"), "corrupt"),
    (wrapped(zlib.compress(b'{"format_version": 4}')[:-3]), "truncated"),
    (wrapped(zlib.compress(b"{}") + b"junk"), "trailing"),
    (wrapped(zlib.compress(b"\xff\xfe{}")), "UTF-8"),
    (wrapped(zlib.compress(b"{}"), extra=1), "nothing else"),
    (json.dumps({"format_version": 3, "deflated": ""}), "nothing else"),
])
def test_bad_deflated_documents_are_one_line_format_errors(tmp_path, payload, match):
    model = create("lenet300_100", in_features=64)
    save(model, tmp_path / "m.nsk")
    _, streams = stored_document(tmp_path / "m.nsk")
    path = rewritten(tmp_path / "bad.nsk", payload, streams)
    with pytest.raises(NetshrinkFormatError, match=match) as info:
        load(path)
    assert "\n" not in str(info.value)


def test_a_deflate_bomb_is_refused_after_bounded_work(tmp_path):
    bomb = zlib.compress(b"[" + b"[]," * (40 << 20) + b"[]]", 9)  # 120 MiB of nested JSON in about 120 KB
    assert inflation_cap(len(bomb)) <= MAX_DOCUMENT_BYTES < 120 << 20
    model = create("lenet300_100", in_features=64)
    save(model, tmp_path / "m.nsk")
    _, streams = stored_document(tmp_path / "m.nsk")
    path = rewritten(tmp_path / "bomb.nsk", wrapped(bomb), streams)

    def refused():
        with pytest.raises(NetshrinkFormatError, match="inflates past") as info:
            load(path)
        return info.value

    bounded(refused, limit_bytes=32 * 2 ** 20)  # at most the capped text is inflated, never parsed
