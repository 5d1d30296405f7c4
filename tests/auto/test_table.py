"""The table's rows: sensitivity and cost of one layer's candidate, measured on the real artefacts."""

import copy

import numpy as np
import pytest
import torch

from netshrink.autocompress import Budget, PointSpec, auto
from netshrink.autocompress.choices import KEEP, Choice, candidate_layers
from netshrink.autocompress.inputs import write_original
from netshrink.autocompress.table import Setting, context, encoded_bytes, measure_choice
from netshrink.codec.container import load, save
from netshrink.core import finalize_
from netshrink.measure import count_macs
from netshrink.models import create
from netshrink.prune import MagnitudePrune, StructuredPrune, prune_
from netshrink.quant import Cluster, cluster_
from netshrink.train import FitConfig, fit
from tests.auto.conftest import RECOVERY, SPACE


def _context(model, out, kind):
    digest = write_original(model, out, "tests.models:UserMLP" if kind == "bytes" else None, {"name": "digits"})
    table = {"checkpoint": str(out / "original.nsk")}
    if kind == "bytes":
        table["builder"] = "tests.models:UserMLP"
    return context(Setting(digest, tuple(sorted(table.items())),
                           (("name", "digits"), ("val_fraction", 0.1)), kind, 64))


def test_keeping_a_layer_costs_and_changes_nothing(trained_mlp, tmp_path):
    ctx = _context(trained_mlp, tmp_path, "bytes")
    row = measure_choice(ctx, "body.1", KEEP)
    assert row["kl"] == 0.0 and row["cost"] == 0.0
    assert row["accuracy"] == float((ctx.reference.argmax(-1) == ctx.y).float().mean())


def test_the_bytes_cost_is_what_the_file_stores_for_the_changed_tensor(trained_mlp, tmp_path):
    ctx = _context(trained_mlp, tmp_path, "bytes")
    choice = Choice(sparsity=0.8, values="cluster", bits=4)
    row = measure_choice(ctx, "body.1", choice)
    by_hand = copy.deepcopy(ctx.model)  # the techniques' own verbs, saved and loaded back
    prune_(by_hand, MagnitudePrune(sparsity={"body.1": 0.8}))
    finalize_(by_hand)
    cluster_(by_hand, Cluster(bits={"body.1": 4}))
    finalize_(by_hand)
    save(by_hand, tmp_path / "by_hand.nsk")
    stored = load(tmp_path / "by_hand.nsk", model=type(trained_mlp)()).state_dict()["body.1.weight"]
    before = ctx.model.state_dict()["body.1.weight"]
    chains = ("codebook", "sparse+codebook")
    assert row["cost"] == encoded_bytes(stored, chains) - encoded_bytes(before, effort="default") < 0
    assert row["kl"] > 0.0


class WideMLP(torch.nn.Module):
    """A weight above the default effort's sample size (65,536 values): ``save`` stores it raw."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 1100), torch.nn.ReLU())
        self.head = torch.nn.Linear(1100, 10)

    def forward(self, x):
        return self.head(self.body(x))


def test_the_original_s_sizes_are_what_its_file_stores(tmp_path):
    """The table's costs are changes from these sizes: measured at another effort than the file's,
    a 1 MB LeNet-300-100's allocations were all predicted 150 KB too large."""
    torch.manual_seed(0)
    builder = f"{__name__}:WideMLP"
    digest = write_original(WideMLP(), tmp_path, builder, {"name": "digits"})
    table = (("builder", builder), ("checkpoint", str(tmp_path / "original.nsk")))
    ctx = context(Setting(digest, table, (("name", "digits"), ("val_fraction", 0.1)), "bytes", 16))
    stored = sum(ctx.tensor_bytes.values())
    assert abs((tmp_path / "original.nsk").stat().st_size - stored) < 4096  # the header and document
    assert stored > 4 * 70_400  # the wide weight counted raw, as the file holds it


def test_the_macs_cost_of_removing_channels_is_the_counter_s(digits, tmp_path):
    torch.manual_seed(0)
    model = create("lenet300_100", in_features=64)
    ctx = _context(model, tmp_path, "macs")
    assert candidate_layers(ctx.model, "macs") == ["fc1", "fc2"]  # the classifier's outputs stay
    row = measure_choice(ctx, "fc1", Choice(amount=0.5))
    by_hand = prune_(copy.deepcopy(ctx.model), StructuredPrune(amount=0.5, layers=("fc1",)))
    assert row["cost"] == count_macs(by_hand, digits.input_shape) - count_macs(ctx.model, digits.input_shape) < 0


def test_a_macs_budget_on_a_zoo_model_removes_channels_within_it(digits, tmp_path):
    torch.manual_seed(0)
    model = create("lenet300_100", in_features=64)
    fit(model, digits, FitConfig(epochs=3, lr=0.05, batch_size=64), progress=False)
    result = auto(model, digits, Budget(max_macs="2x", time_limit="10m"), tmp_path, recovery=RECOVERY, space=SPACE,
                  schedule=(PointSpec(1.0, "kl", 0), PointSpec(1.0, "kl", 1)), calibration_samples=64,
                  log=lambda line: None)
    assert result.met and all(p["macs"] <= result.limit for p in result.points)
    assert result.chosen["recipe"]["stages"][0]["verb"] == "structured_prune"
    assert "checkpoint" in result.chosen["recipe"]["model"] and "builder" not in result.chosen["recipe"]["model"]


@pytest.mark.parametrize("chains", [(), ("codebook", "sparse+codebook")])
def test_encoded_bytes_is_never_below_the_cheapest_encoding(chains):
    from netshrink.codec.tensor_encodings import encode_tensor

    torch.manual_seed(0)
    weight = torch.randn(24, 48).round(decimals=1)  # few distinct values: a codebook fits; some -0.0
    positive = torch.where(weight == 0, torch.zeros_like(weight), weight)
    assert encoded_bytes(weight, chains) >= encode_tensor(positive).cost()
    assert encoded_bytes(weight) == encode_tensor(positive).cost() < encode_tensor(weight).cost()  # as save stores


def test_a_latency_row_is_a_measured_change(tmp_path):
    torch.manual_seed(0)
    ctx = _context(create("lenet300_100", in_features=64), tmp_path, "latency_ms")
    assert ctx.latency_ms > 0
    row = measure_choice(ctx, "fc1", Choice(amount=0.5))
    assert np.isfinite(row["cost"]) and row["cost"] > -ctx.latency_ms  # a change of a positive time


def test_a_latency_search_shares_one_reference_time_across_processes(tmp_path):
    """A worker's context takes the search's measured original latency from the setting, so its
    costs (interleaved ratios times that figure) are on the search's scale, not on its own timing."""
    torch.manual_seed(0)
    model = create("lenet300_100", in_features=64)
    digest = write_original(model, tmp_path, None, {"name": "digits"})
    table = (("checkpoint", str(tmp_path / "original.nsk")),)
    setting = Setting(digest, table, (("name", "digits"), ("val_fraction", 0.1)), "latency_ms", 64, latency_ms=123.0)
    ctx = context(setting)
    assert ctx.latency_ms == 123.0
    ctx.meter.ratio = lambda model: 0.5  # a trial timed at half the original's time, beside it
    assert measure_choice(ctx, "fc1", Choice(amount=0.75))["cost"] == -61.5  # on the search's 123 ms scale


def test_a_size_search_records_a_points_latency_as_a_plain_measurement(trained_mlp, tmp_path):
    from netshrink.autocompress.table import latency_of

    ctx = _context(trained_mlp, tmp_path, "bytes")
    assert ctx.meter is None and latency_of(ctx, ctx.model) > 0


@pytest.mark.slow
def test_an_onnxruntime_latency_search_times_exported_models_against_the_exported_original(tmp_path, monkeypatch):
    from netshrink.autocompress import timing
    from netshrink.measure import latency as latency_module

    monkeypatch.setattr(timing, "MIN_SECONDS", 0.0)  # the context's own timing: the turns alone
    torch.manual_seed(0)
    model = create("lenet300_100", in_features=64)
    digest = write_original(model, tmp_path, None, {"name": "digits"})
    table = (("checkpoint", str(tmp_path / "original.nsk")),)
    ctx = context(Setting(digest, table, (("name", "digits"), ("val_fraction", 0.1)), "latency_ms", 64,
                          runtime="onnxruntime"))
    assert ctx.meter.runtime == "onnxruntime" and ctx.latency_ms > 0
    other = create("lenet300_100", in_features=64).eval()
    seen = {}

    def fake_interleaved(runners, rounds, min_seconds=0.0):  # what each runner runs; no speed asserted
        seen.update({name: run()[0] for name, run in runners.items()})
        return {"model": 1.0, "original": 4.0}

    monkeypatch.setattr(latency_module, "interleaved_ms", fake_interleaved)
    assert ctx.meter.ratio(other) == 0.25
    sample = ctx.x[:1]
    with torch.no_grad():  # each side runs its own exported model on the first calibration sample
        assert np.allclose(seen["model"], other(sample).numpy(), atol=1e-4)
        assert np.allclose(seen["original"], ctx.model(sample).numpy(), atol=1e-4)
    row = measure_choice(ctx, "fc1", Choice(amount=0.75))  # a pruned trial exports and runs
    assert row["cost"] == ctx.latency_ms * 0.25 - ctx.latency_ms and seen["model"].shape == (1, 10)
