"""Each technique's record check: ``load`` refuses, in one line and before its rebuilder allocates, a
log record that the technique's handler would have refused for the model as it stands."""

import copy

import pytest
import torch

from netshrink.arch import LowRank, low_rank_
from netshrink.codec.container import load, save
from netshrink.core import finalize_
from netshrink.core.errors import NetshrinkFormatError
from netshrink.dynamic import EarlyExit, Slimmable, early_exit_, slimmable_
from netshrink.models import create
from netshrink.prune import MagnitudePrune, StructuredPrune, prune_
from tests.codec.test_container_validation import as_version_4, read, write


def _saved(tmp_path, transform):
    torch.manual_seed(0)
    model = create("lenet300_100", in_features=64)
    transform(model)
    finalize_(model)
    save(model, tmp_path / "ok.nsk")
    load(tmp_path / "ok.nsk")  # the untouched file loads
    return read(tmp_path / "ok.nsk")


def _refused(tmp_path, doc, tensors, match):
    path = write(tmp_path / "bad.nsk", doc, tensors)
    with pytest.raises(NetshrinkFormatError, match=match) as refused:
        load(path)
    assert "\n" not in str(refused.value)


def _first(doc, verb):
    return next(r for r in doc["transform_log"] if r["verb"] == verb)


def test_structured_sizes_never_grow_a_layer(tmp_path):
    doc, tensors = _saved(tmp_path, lambda m: prune_(m, StructuredPrune(amount=0.5)))
    grown = copy.deepcopy(doc)
    _first(grown, "structured_prune")["shapes"]["fc1"]["out"] = 301  # fc1 has 300 neurons
    _refused(tmp_path, grown, tensors, r"'fc1' out size must be an integer from 1 to 300")
    zero = copy.deepcopy(doc)
    _first(zero, "structured_prune")["shapes"]["fc1"]["out"] = 0
    _refused(tmp_path, zero, tensors, "from 1 to 300")
    unknown = copy.deepcopy(doc)
    _first(unknown, "structured_prune")["shapes"]["fc9"] = {"out": 3}
    _refused(tmp_path, unknown, tensors, "'fc9', which the model does not have")
    role = copy.deepcopy(doc)
    _first(role, "structured_prune")["shapes"]["fc1"]["width"] = 3
    _refused(tmp_path, role, tensors, "role of 'fc1' must be one of")


def test_a_rank_is_at_most_the_layers_rank(tmp_path):
    doc, tensors = _saved(tmp_path, lambda m: low_rank_(m, LowRank(rank=8, layers=("fc1",))))
    record = _first(doc, "low_rank")
    assert record["layers"]["fc1"]["rank"] == 8
    high = copy.deepcopy(doc)
    _first(high, "low_rank")["layers"]["fc1"]["rank"] = 10 ** 9
    _refused(tmp_path, high, tensors, r"rank of 'fc1' must be an integer from 1 to 64")
    kind = copy.deepcopy(doc)
    _first(kind, "low_rank")["layers"]["fc1"]["kind"] = "separable"  # a conv kind on a Linear
    _refused(tmp_path, kind, tensors, "kind of 'fc1' must be one of")


def test_a_config_the_handler_would_refuse_is_refused(tmp_path):
    doc, tensors = _saved(tmp_path, lambda m: prune_(m, MagnitudePrune(sparsity=0.5)))
    bad = copy.deepcopy(doc)
    _first(bad, "magnitude_prune")["config"]["sparsity"] = 1.5
    _refused(tmp_path, bad, tensors, "magnitude_prune record: .*sparsity")
    other = copy.deepcopy(doc)
    _first(other, "magnitude_prune")["config"] = {"type": "Cluster", "version": 1, "bits": 4}
    _refused(tmp_path, other, tensors, "holds a Cluster config, not MagnitudePrune")


def test_a_technique_applied_twice_where_it_cannot_be_is_refused(tmp_path):
    doc, tensors = _saved(tmp_path, lambda m: early_exit_(m, EarlyExit(after=("fc1",))))
    twice = copy.deepcopy(doc)
    twice["transform_log"].append(copy.deepcopy(_first(doc, "early_exit")))
    _refused(tmp_path, twice, tensors, "early_exit is applied twice")
    heads = copy.deepcopy(doc)
    _first(heads, "early_exit")["shapes"].append([300])  # one exit block, two heads
    _refused(tmp_path, heads, tensors, "one head input shape per block")

    doc, tensors = _saved(tmp_path, lambda m: slimmable_(m, Slimmable(widths=(0.5, 1.0))))
    both = copy.deepcopy(doc)
    both["transform_log"].append(copy.deepcopy(_first(doc, "slimmable")))
    _refused(tmp_path, both, tensors, "slimmable is applied twice")


def test_legacy_profile_and_encode_records_become_a_section_and_nothing(tmp_path):
    """Files of format 4 kept a profile table and encoding requests in the log; they still load."""
    doc, tensors = _saved(tmp_path, lambda m: None)
    doc["transform_log"] = [
        {"verb": "encode", "config": {"type": "Encode", "version": 1, "encodings": {"fc1.weight": "dense"}}},
        {"verb": "dynamic_profile", "config": {"type": "DynamicProfile", "version": 1, "points": [{"kind": "exit"}],
                                               "device": "cpu", "threads": 1}},
        {"verb": "dynamic_profile", "config": {"type": "DynamicProfile", "version": 1, "points": [],
                                               "device": "cuda", "threads": 2}}]
    from netshrink.core import get_log, get_section

    as_version_4(doc, tensors)
    loaded = load(write(tmp_path / "old.nsk", doc, tensors))
    assert get_log(loaded) == []
    assert get_section(loaded, "dynamic_profile") == {"points": [], "device": "cuda", "threads": 2}
    doc["format_version"] = 5  # a format-5 file never held them: refused as the unknown verbs they are
    del doc["stream_crc"]
    _refused(tmp_path, doc, tensors, "unknown verb 'encode'")


def test_a_size_is_bounded_by_its_own_role_and_exits_name_real_blocks(tmp_path):
    """Found in review: a size bounded by the layer's longest tensor let fc2 (300 -> 100) 'grow' to
    250 neurons, and an exit after a block the model lacks loaded and failed at inference."""
    doc, tensors = _saved(tmp_path, lambda m: prune_(m, StructuredPrune(amount=0.5)))
    grown = copy.deepcopy(doc)
    _first(grown, "structured_prune")["shapes"]["fc2"] = {"out": 250}
    _refused(tmp_path, grown, tensors, r"'fc2' out size must be an integer from 1 to 100")
    doc, tensors = _saved(tmp_path, lambda m: early_exit_(m, EarlyExit(after=("fc1",))))
    nowhere = copy.deepcopy(doc)
    _first(nowhere, "early_exit")["config"]["after"] = ["nope"]
    _refused(tmp_path, nowhere, tensors, "'nope', which the model does not have")


def test_an_activation_grid_from_a_file_is_checked_before_it_is_built(tmp_path):
    import torch

    from netshrink.quant import Quantize, quantize_

    doc, tensors = _saved(tmp_path, lambda m: quantize_(m, Quantize(bits=8, activation_bits=8,
                                                                  calibration_data=torch.rand(8, 64))))
    grids = _first(doc, "quantize")["activation_grids"]
    assert grids
    for bad, match in (({"scale": "x"}, "scale must be a positive number"),
                       ({"zero_point": 2 ** 40}, "zero_point must be a 16-bit integer"),
                       ({"scale": [1.0, 2.0]}, "scale must be a positive number")):
        edited = copy.deepcopy(doc)
        name = next(iter(grids))
        _first(edited, "quantize")["activation_grids"][name].update(bad)
        _refused(tmp_path, edited, tensors, match)
