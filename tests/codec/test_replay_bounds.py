"""Regressions: small well-formed files whose transform log, tensor count or document made load
take seconds to minutes and gigabytes (issue 21). Each rule is asserted as bytes allocated (torch
tensors through a dispatch mode, the Python heap through tracemalloc) or operations counted, never
as seconds."""

import json
import re

import numpy as np
import pytest
import safetensors.numpy
import torch
from torch import nn

from netshrink.codec.container import load, save
from netshrink.codec.inspect import inspect_report
from netshrink.codec.validate import BYTES_FLOOR, LOG_VALUES_FLOOR, REGISTRATIONS_FLOOR
from netshrink.core.errors import NetshrinkFormatError
from netshrink.prune.structured import StructuredPrune
from tests.codec.hostile import lenet_shapes, write
from tests.codec.work import bounded, operations, torch_allocated

#: a refused file costs about as many calls as validating its document and checking its log
REFUSAL_OPERATIONS = 60_000
PRUNE = StructuredPrune().to_dict()


def refused(call, match, operations_limit=REFUSAL_OPERATIONS, torch_bytes=1 << 20):
    """``call()`` raises a one-line NetshrinkFormatError matching ``match`` after few operations,
    under 16 MiB of Python heap and ``torch_bytes`` of torch tensors."""
    errors = []

    def attempt():
        try:
            call()
        except NetshrinkFormatError as error:
            errors.append(error)

    allocated = []
    work = bounded(lambda: operations(lambda: allocated.append(torch_allocated(attempt))), 16 * 2 ** 20)
    assert errors, "the file was not refused"
    assert "\n" not in str(errors[0]) and re.search(match, str(errors[0])), str(errors[0])
    assert work < operations_limit, work
    assert allocated[0] < torch_bytes, allocated[0]


def test_the_replay_is_bounded_summed_over_its_steps(tmp_path):
    """4 KB: lenet300_100(in_features=50,000) whose log narrows fc1 by one input 200 times. The
    model it ends with fits the file's element bound, but each step copied the 60 MB layer: 12 GB
    of copies. The meta replay counts every step's allocation and refuses when the sum passes the
    file's budget, before the real build."""
    n, steps = 50_000, 200
    log = [{"verb": "structured_prune", "config": PRUNE, "shapes": {"fc1": {"in": n - 1 - k}}}
           for k in range(steps)]
    path = tmp_path / "steps.nsk"
    assert write(path, lenet_shapes(n - steps), log, {"name": "lenet300_100", "kwargs": {"in_features": n}}) < 8000
    assert 300 * n * 4 < BYTES_FLOOR < 2 * 300 * n * 4  # the build fits the budget, one step more does not
    refused(lambda: load(path), "budget")


class SmallConv(nn.Module):
    """A user's model with (C, H, W) features for exit heads: 1x8x8 input, 4 channels, 10 classes."""

    def __init__(self):
        super().__init__()
        self.features = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        return self.fc(self.features(x).flatten(1))


def test_a_record_a_later_record_replaces_is_bounded_too(tmp_path):
    """A conv exit head 2**20 channels wide (a 151 MB 3x3 conv on the meta copy) that a later
    low-rank record replaces by rank-1 factors: the finished model would be small, the step that
    makes the head is not."""
    width = 2 ** 20
    exit_config = {"type": "EarlyExit", "version": 1, "after": ["features"], "head": "conv", "head_channels": width,
                   "pool": 1, "criterion": "max_softmax", "input_shape": [1, 8, 8]}
    rank_config = {"type": "LowRank", "version": 1, "rank": 1, "energy": None, "param_ratio": None,
                   "conv": "channel", "layers": ["exit_heads.0.0"]}
    log = [{"verb": "early_exit", "config": exit_config, "shapes": [[4, 8, 8]], "num_classes": 10},
           {"verb": "low_rank", "config": rank_config, "layers": {"exit_heads.0.0": {"kind": "conv", "rank": 1}}}]
    shapes = {name: list(tensor.shape) for name, tensor in SmallConv().state_dict().items()}
    path = tmp_path / "head.nsk"
    assert write(path, shapes, log) < 4000
    # the exit check first traces the model's stages on a meta copy (torch.fx: tens of thousands of
    # calls, bounded by the model, not by the file)
    refused(lambda: load(path, model=SmallConv()), "budget", operations_limit=4 * REFUSAL_OPERATIONS)


def test_exit_heads_follow_from_the_models_shapes(tmp_path):
    """A logged exit head input (or class count) other than the model's own would size a head at
    will; one after LeNet's 300-wide fc1 into its 10 classes logged as 4,096 wide, or into 4,096
    classes, or as (300, 1), is refused by the record check before anything is built."""
    exit_config = {"type": "EarlyExit", "version": 1, "after": ["fc1"], "head": "linear", "head_channels": 32,
                   "pool": 1, "criterion": "max_softmax", "input_shape": []}
    arch = {"name": "lenet300_100", "kwargs": {"in_features": 64}}
    for shapes, classes in (([[4096]], 10), ([[300]], 4096), ([[300, 1]], 10)):
        log = [{"verb": "early_exit", "config": exit_config, "shapes": shapes, "num_classes": classes}]
        head = {"exit_heads.0.weight": [classes, shapes[0][0]], "exit_heads.0.bias": [classes]}
        extra = {"exit_thresholds": [1], "exit_fixed": ([], "int64")}
        path = tmp_path / "head.nsk"
        assert write(path, {**lenet_shapes(64), **extra, **head}, log, arch) < 4000
        refused(lambda path=path: load(path), "exit heads must follow from the model's shapes")


class Layers(nn.Module):
    def __init__(self, count):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(2, 2) for _ in range(count))


def test_registrations_summed_over_the_replay_are_bounded(tmp_path):
    """Every record may resize every layer: 24 records over 100 layers register 4,800 parameters,
    each a step of Python work, for a file of a few KB."""
    count, records = 100, 24
    shapes = {f"layers.{i}.{kind}": [2, 2] if kind == "weight" else [2] for i in range(count)
              for kind in ("weight", "bias")}
    record = {"verb": "structured_prune", "config": PRUNE, "shapes": {f"layers.{i}": {"out": 2} for i in range(count)}}
    path = tmp_path / "many.nsk"
    assert write(path, shapes, [record] * records) < 16_000  # so at most REGISTRATIONS_FLOOR
    assert 2 * count * records > REGISTRATIONS_FLOOR
    refused(lambda: load(path, model=Layers(count)), "registers more than", operations_limit=2_000_000)


def test_log_values_are_bounded_by_the_files_bytes(tmp_path):
    """The log's values, each a step of checking and replaying, grow with the file's real bytes:
    a deflated log of 1,000 records was a few hundred bytes."""
    record = {"verb": "magnitude_prune", "config": {"type": "MagnitudePrune", "version": 1, "sparsity": 0.5,
                                                    "scope": "layer", "layers": None}}
    path = tmp_path / "log.nsk"
    assert write(path, lenet_shapes(64), [record] * (LOG_VALUES_FLOOR // 7 + 1),
                 {"name": "lenet300_100", "kwargs": {"in_features": 64}}) < 3000
    refused(lambda: load(path), "transform log values", operations_limit=120_000)


def test_tensors_are_bounded_by_the_files_bytes(tmp_path):
    path = tmp_path / "tensors.nsk"
    write(path, {f"t{i}": [0] for i in range(5000)})  # deflates to a few bytes a tensor
    refused(lambda: load(path, model=nn.Module()), "5000 tensors")


def test_load_is_linear_in_the_number_of_tensors(tmp_path):
    """nn.Module.load_state_dict scans every key once per module: 4x the work for 2x the layers."""
    work = []
    for count in (200, 400):
        model = Layers(count)
        save(model, tmp_path / f"{count}.nsk")
        work.append(operations(lambda count=count: load(tmp_path / f"{count}.nsk", model=Layers(count))))
    assert work[1] < 2.3 * work[0], work


def test_budgets_count_decoded_bytes_not_elements(tmp_path):
    """8.4M float64 zeros: within the element bound of a tiny file (2**24), but 67 MB decoded
    beside the model's own fp32 copy, past its 64 MiB budget."""
    path = tmp_path / "wide.nsk"
    write(path, {"weight": ([4096, 2048], "float64"), "bias": ([4096], "float64")})
    model = nn.Linear(2048, 4096)
    refused(lambda: load(path, model=model), "max_params")


def test_padding_the_metadata_does_not_raise_the_budget(tmp_path):
    shapes = lenet_shapes(100_000)  # 30M elements: past the 2**24 bound of a tiny file
    arch = {"name": "lenet300_100", "kwargs": {"in_features": 100_000}}
    path = tmp_path / "padded.nsk"
    write(path, shapes, arch=arch, extra_metadata={"padding": " " * (1 << 20)})
    refused(lambda: load(path), "unknown keys")
    text = json.dumps({"format_version": 4, "architecture": arch, "stream_crc": 0, "tensors": {}})
    spaced = text.replace(",", "," + " " * (1 << 16))  # 256 KB of spaces in the plain JSON document
    write(path, shapes, arch=arch)
    doc = json.loads(safetensors.safe_open(str(path), "numpy").metadata()["netshrink"])
    assert "deflated" in doc
    from tests.codec.hostile import zeros_entry

    plain = json.loads(text)
    plain["tensors"] = {name: zeros_entry(shape) for name, shape in shapes.items()}
    spaced = json.dumps(plain).replace(",", "," + " " * (1 << 14))
    path.write_bytes(safetensors.numpy.save({"streams": np.zeros(0, np.uint8)}, metadata={"netshrink": spaced}))
    assert path.stat().st_size > 300_000  # 300 M elements' worth of file bytes, had spaces counted
    refused(lambda: load(path), "max_params", operations_limit=200_000)


def test_unknown_document_keys_are_refused(tmp_path):
    path = tmp_path / "extra.nsk"
    write(path, {"w": [3]}, comment="x")
    refused(lambda: load(path, model=nn.Module()), "unknown keys")


def test_json_nesting_is_capped(tmp_path):
    """A record nested 400 deep parsed, then ended in a raw RecursionError in the log's deep copy."""
    deep = {}
    for _ in range(400):
        deep = {"a": deep}
    path = tmp_path / "deep.nsk"
    write(path, lenet_shapes(64), [{"verb": "magnitude_prune", "config": deep}],
          {"name": "lenet300_100", "kwargs": {"in_features": 64}})
    refused(lambda: load(path), "nests deeper than 32")


def test_strings_must_be_valid_utf8(tmp_path):
    """A tensor name with a lone surrogate (the JSON escape \\ud800) ended in a raw
    UnicodeEncodeError when its name was printed."""
    path = tmp_path / "surrogate.nsk"
    write(path, {"bad\ud800name": [3]})
    refused(lambda: load(path, model=nn.Module()), "UTF-8")
    refused(lambda: inspect_report(path), "UTF-8")


def test_everything_after_opening_is_a_format_error(tmp_path, monkeypatch):
    """Whatever fails after the file is opened (here the final copy of the log) is one line."""
    import netshrink.codec.container as container

    model = nn.Linear(2, 2)
    save(model, tmp_path / "m.nsk")

    def fail(*args):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(container, "set_log", fail)
    with pytest.raises(NetshrinkFormatError, match="recursion") as info:
        load(tmp_path / "m.nsk", model=nn.Linear(2, 2))
    assert "\n" not in str(info.value)


def test_names_are_printed_escaped(tmp_path):
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("a\x1b[2Jb", torch.zeros(2))

    save(Odd(), tmp_path / "odd.nsk")
    report = inspect_report(tmp_path / "odd.nsk")
    assert "\x1b" not in report and "a\\x1b[2Jb" in report
