"""The stored metadata document: deflated when shorter, read back within bounds, plain JSON still read."""

import base64
import json
import zlib

import pytest
import safetensors.numpy
import torch
from safetensors import safe_open

from netshrink.codec.container import load, save
from netshrink.codec.document import DEFLATED_PREFIX, MAX_INFLATION, MIN_DOCUMENT_CAP, pack_document, unpack_document
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


def test_pack_round_trips_and_keeps_short_text_plain():
    text = json.dumps({"tensors": {f"layer{i}.weight": {"shape": [300, 784]} for i in range(40)}})
    packed = pack_document(text)
    assert packed.startswith(DEFLATED_PREFIX) and len(packed) < len(text) / 3
    assert unpack_document(packed) == text
    assert pack_document('{"a":1}') == '{"a":1}'  # deflating would make it longer


def test_saved_file_is_smaller_than_with_a_plain_document_and_loads_the_same(tmp_path):
    model = create("lenet300_100", in_features=64)
    fill_weights(model, "clustered16")
    save(model, tmp_path / "m.nsk")
    stored, streams = stored_document(tmp_path / "m.nsk")
    assert stored.startswith(DEFLATED_PREFIX)
    plain = rewritten(tmp_path / "plain.nsk", unpack_document(stored), streams)  # what version 3 stored
    assert (tmp_path / "m.nsk").stat().st_size < plain.stat().st_size
    x = torch.randn(5, 64)
    assert load(tmp_path / "m.nsk")(x).equal(load(plain)(x))


@pytest.mark.parametrize("payload, match", [
    ("zb64:not base64!", "not valid base64"),
    (DEFLATED_PREFIX + base64.b64encode(b"not deflate at all").decode(), "corrupt"),
    (DEFLATED_PREFIX + base64.b64encode(zlib.compress(b'{"format_version": 4}')[:-3]).decode(), "truncated"),
    (DEFLATED_PREFIX + base64.b64encode(zlib.compress(b"{}") + b"junk").decode(), "trailing"),
    (DEFLATED_PREFIX + base64.b64encode(zlib.compress(b"\xff\xfe{}")).decode(), "UTF-8"),
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
    bomb = zlib.compress(b"{" + b" " * (64 << 20) + b"}", 9)  # 64 MiB of JSON in about 64 KB
    assert MAX_INFLATION * len(bomb) < 64 << 20 and MIN_DOCUMENT_CAP < 64 << 20
    model = create("lenet300_100", in_features=64)
    save(model, tmp_path / "m.nsk")
    _, streams = stored_document(tmp_path / "m.nsk")
    path = rewritten(tmp_path / "bomb.nsk", DEFLATED_PREFIX + base64.b64encode(bomb).decode(), streams)

    def refused():
        with pytest.raises(NetshrinkFormatError, match="inflates past") as info:
            load(path)
        return info.value

    bounded(refused, limit_bytes=48 * 2 ** 20)  # the 64 MiB is never inflated whole
