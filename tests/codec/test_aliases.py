"""Tied tensors (one storage under several state-dict names) are written once and load tied."""

import pytest
import torch

from netshrink.codec.container import load, read_tensors, save
from netshrink.codec.inspect import inspect_file
from netshrink.core.errors import NetshrinkFormatError
from tests.codec.test_container_validation import read, refused, write
from tests.models import tiny_llama, token_inputs

EMBEDDING, HEAD = "model.embed_tokens.weight", "lm_head.weight"


def _saved(tmp_path, tie):
    torch.manual_seed(0)
    model = tiny_llama(tie=tie).eval()
    if not tie:  # the same values in two tensors: only the sharing differs
        with torch.no_grad():
            model.lm_head.weight.copy_(model.model.embed_tokens.weight)
    path = tmp_path / f"tie{tie}.nsk"
    save(model, path, effort="max")
    return model, path


def test_tied_model_is_smaller_and_loads_tied_with_the_same_outputs(tmp_path):
    tied, tied_path = _saved(tmp_path, True)
    _, untied_path = _saved(tmp_path, False)
    table = tied.model.embed_tokens.weight
    # the tied file lacks one copy of the table, less the alias entry's few bytes
    saving = untied_path.stat().st_size - tied_path.stat().st_size
    assert saving > 0.5 * table.numel() * table.element_size()
    doc, _ = read(tied_path)
    assert doc["tensors"][HEAD] == {"alias": EMBEDDING}
    loaded = load(tied_path, model=tiny_llama(tie=True))
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    inputs = token_inputs()
    with torch.no_grad():
        assert torch.equal(loaded(**inputs).logits, tied(**inputs).logits)
    rows = {row["name"]: row for row in inspect_file(tied_path)}
    assert rows[HEAD]["encoding"] == "alias" and rows[HEAD]["bytes"] == 0


def test_alias_fills_an_untied_model_and_read_tensors(tmp_path):
    tied, path = _saved(tmp_path, True)
    loaded = load(path, model=tiny_llama(tie=False))
    assert loaded.lm_head.weight.data_ptr() != loaded.model.embed_tokens.weight.data_ptr()
    assert torch.equal(loaded.lm_head.weight, tied.lm_head.weight)
    _, specs, tensors = read_tensors(path)
    assert specs[HEAD].alias == EMBEDDING and tensors[HEAD] is tensors[EMBEDDING]


@pytest.mark.parametrize(("edit", "match"), [
    (lambda t: t.__setitem__(HEAD, {"alias": "nowhere"}), "no earlier tensor"),
    (lambda t: t.__setitem__(HEAD, {"alias": 3}), "no earlier tensor"),
    (lambda t: t.__setitem__(HEAD, {"alias": HEAD}), "no earlier tensor"),  # itself: a cycle
    (lambda t: t.__setitem__(HEAD, {"alias": EMBEDDING, "shape": [1]}), "unknown keys"),
    (lambda t: t.update({"x": {"alias": HEAD}}), "itself an alias"),  # a chain
])
def test_hostile_alias_records_are_refused_in_one_line(tmp_path, edit, match):
    _, path = _saved(tmp_path, True)
    doc, tensors = read(path)
    edit(doc["tensors"])
    refused(write(tmp_path / "bad.nsk", doc, tensors), match, model=tiny_llama())


def test_alias_before_its_target_and_in_an_older_version_are_refused(tmp_path):
    _, path = _saved(tmp_path, True)
    doc, tensors = read(path)
    first = {HEAD: doc["tensors"].pop(HEAD)}
    doc["tensors"] = {**first, **doc["tensors"]}  # the alias now comes first: a forward reference
    refused(write(tmp_path / "ahead.nsk", doc, tensors), "no earlier tensor", model=tiny_llama())
    doc, tensors = read(path)
    doc["format_version"], doc["stream_crc"] = 4, 0
    refused(write(tmp_path / "v4.nsk", doc, tensors), "format version 4", model=tiny_llama())


def test_aliases_count_in_the_declared_elements(tmp_path):
    """An alias adds no stream bytes but a model may hold it untied: its elements count against
    ``max_params`` (by default the file's bytes), so many aliases of a big tensor are bounded."""
    _, path = _saved(tmp_path, True)
    _, specs, _ = read_tensors(path)
    stored = sum(spec.numel for spec in specs.values() if spec.alias is None)
    with pytest.raises(NetshrinkFormatError, match="max_params"):
        read_tensors(path, max_params=stored)
    read_tensors(path, max_params=stored + specs[HEAD].numel)
