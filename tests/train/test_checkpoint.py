import json
import os
import resource
import struct

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from netshrink.core import apply_
from netshrink.core.errors import NetshrinkFormatError
from netshrink.core.transform_log import append_record, get_log
from netshrink.train import FitConfig, load_checkpoint, load_model, save_checkpoint, save_model
from netshrink.train import checkpoint as checkpoint_module
from netshrink.train.checkpoint import load_optimizer_state
from tests.models import TINY_MODELS
from tests.techniques import ScaleWeights, ShrinkHead


def _trained_adam(model):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(4, 1, 8, 8)).sum().backward()
    optimizer.step()
    return optimizer


def _assert_safetensors_only(path):
    raw = path.read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + header_len])  # a safetensors header: JSON, not a pickle
    assert "__metadata__" in header
    assert not raw.startswith((b"\x80", b"PK"))  # neither a pickle nor torch.save's zip


def test_checkpoint_is_plain_safetensors_and_round_trips(tmp_path):
    torch.manual_seed(0)
    model = TINY_MODELS["convnet"]()
    optimizer = _trained_adam(model)
    path = tmp_path / "checkpoint.safetensors"
    save_checkpoint(path, model, optimizer, extra={"rng.torch.0": torch.get_rng_state(), "epoch": 3})
    _assert_safetensors_only(path)
    with safe_open(str(path), framework="pt") as handle:
        keys = set(handle.keys())
        meta = json.loads(handle.metadata()["netshrink"])
    assert {f"model.{k}" for k in model.state_dict()} <= keys
    assert "optim.0.exp_avg" in keys and "rng.torch.0" in keys
    assert meta["format"] == "netshrink-checkpoint" and meta["epoch"] == 3
    assert meta["arch"]["name"] == "convnet"

    tensors, meta = load_checkpoint(path)
    assert tensors["rng.torch.0"].dtype == torch.uint8
    fresh = TINY_MODELS["convnet"]()
    fresh_optimizer = torch.optim.Adam(fresh.parameters(), lr=1e-3)
    load_optimizer_state(fresh_optimizer, tensors, meta, path)
    for old, new in zip(model.parameters(), fresh.parameters(), strict=True):
        state, loaded = optimizer.state[old], fresh_optimizer.state[new]
        assert state.keys() == loaded.keys()
        for key in state:
            assert torch.equal(state[key], loaded[key]), key
    assert fresh_optimizer.param_groups[0]["betas"] == optimizer.param_groups[0]["betas"]


@pytest.mark.parametrize("writer", [save_model, save_checkpoint])
def test_load_model_rebuilds_zoo_model_with_its_log(tmp_path, writer):
    torch.manual_seed(0)
    model = TINY_MODELS["lenet5"]().eval()
    apply_(model, ScaleWeights(factor=0.5))  # a verb whose effect is in the weights alone
    path = tmp_path / "weights.safetensors"
    writer(path, model)
    _assert_safetensors_only(path)
    loaded = load_model(path).eval()
    x = torch.randn(5, 1, 8, 8)
    assert torch.equal(model(x), loaded(x))
    assert get_log(loaded) == get_log(model)


def test_load_model_replays_structural_changes_and_refuses_unknown_verbs(tmp_path):
    """A logged structural change (here: fc2 shrunk to 7 outputs) is redone before loading."""
    model = apply_(TINY_MODELS["lenet5"]().eval(), ShrinkHead(outputs=7))
    save_model(tmp_path / "m.safetensors", model)
    loaded = load_model(tmp_path / "m.safetensors").eval()
    x = torch.randn(3, 1, 8, 8)
    assert loaded.fc2.out_features == 7 and torch.equal(model(x), loaded(x))
    append_record(model, "checkpoint_test_unregistered", None)
    save_model(tmp_path / "u.safetensors", model)
    with pytest.raises(NetshrinkFormatError, match="unknown verb"):
        load_model(tmp_path / "u.safetensors")


def test_model_file_holds_the_plain_state_dict(tmp_path):
    model = TINY_MODELS["lenet300_100"]()
    save_model(tmp_path / "model.safetensors", model)
    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as handle:
        assert set(handle.keys()) == set(model.state_dict())


def test_user_class_without_arch_cannot_be_rebuilt(tmp_path):
    save_model(tmp_path / "model.safetensors", TINY_MODELS["user_mlp"]())
    with pytest.raises(NetshrinkFormatError, match="zoo architecture"):
        load_model(tmp_path / "model.safetensors")


def _bad_files(tmp_path):
    good = tmp_path / "good.safetensors"
    save_model(good, TINY_MODELS["user_mlp"]())
    raw = good.read_bytes()
    tensors = {"w": torch.zeros(2)}
    files = {
        "missing": tmp_path / "nothing-here.safetensors",
        "garbage": tmp_path / "garbage.bin",
        "truncated": tmp_path / "truncated.safetensors",
        "no metadata": tmp_path / "plain.safetensors",
        "bad json": tmp_path / "badjson.safetensors",
        "other format": tmp_path / "other.safetensors",
        "future version": tmp_path / "future.safetensors",
        "no arch key": tmp_path / "noarch.safetensors",
    }
    files["garbage"].write_bytes(b"\x80\x04not a checkpoint at all")
    files["truncated"].write_bytes(raw[: len(raw) - 10])
    save_file(tensors, files["no metadata"])
    save_file(tensors, files["bad json"], metadata={"netshrink": "{not json"})
    save_file(tensors, files["other format"], metadata={"netshrink": json.dumps({"format": "x"})})
    save_file(tensors, files["future version"], metadata={"netshrink": json.dumps(
        {"format": "netshrink-model", "version": 99, "arch": None, "transform_log": []})})
    save_file(tensors, files["no arch key"], metadata={"netshrink": json.dumps(
        {"format": "netshrink-model", "version": 1, "transform_log": []})})
    return files


def test_malformed_files_raise_one_line_format_error(tmp_path):
    for name, path in _bad_files(tmp_path).items():
        for loader in (load_checkpoint, load_model):
            with pytest.raises(NetshrinkFormatError) as info:
                loader(path)
            assert "\n" not in str(info.value), name


def test_weights_that_do_not_fit_raise_format_error(tmp_path):
    path = tmp_path / "model.safetensors"
    model = TINY_MODELS["lenet300_100"]()
    save_model(path, model)
    tensors, meta = load_checkpoint(path)
    tensors["fc1.weight"] = tensors["fc1.weight"][:10]
    save_file(tensors, path, metadata={"netshrink": json.dumps(meta)})
    with pytest.raises(NetshrinkFormatError, match="do not fit"):
        load_model(path)


def test_write_leaves_no_temporary_file(tmp_path):
    save_checkpoint(tmp_path / "checkpoint.safetensors", TINY_MODELS["user_mlp"]())
    assert os.listdir(tmp_path) == ["checkpoint.safetensors"]


def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.safetensors"
    model = TINY_MODELS["user_mlp"]()
    save_checkpoint(path, model, extra={"epoch": 1})
    before = path.read_bytes()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint_module.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(path, model, extra={"epoch": 2})
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["checkpoint.safetensors"]
    assert load_checkpoint(path)[1]["epoch"] == 1


def test_extra_tensor_keys_cannot_shadow_model_or_optimizer(tmp_path):
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(tmp_path / "c.safetensors", TINY_MODELS["user_mlp"](),
                        extra={"model.head.weight": torch.zeros(1)})


def _rewrite(path, tensors, meta):
    save_file(tensors, path, metadata={"netshrink": meta if isinstance(meta, str) else json.dumps(meta)})
    return path


@pytest.mark.parametrize("case", ["nested json", "unknown arch", "kwargs not an object", "huge kwargs"])
def test_model_files_naming_bad_architectures_are_refused_cheaply(tmp_path, case):
    """The file's arch is untrusted: it is built on the meta device and checked against the
    stored shapes before any real allocation (a 1 kB file must not build a 2 GB model)."""
    path = tmp_path / "model.safetensors"
    save_model(path, TINY_MODELS["lenet300_100"]())
    tensors, meta = load_checkpoint(path)
    meta = {"nested json": "[" * 100_000 + "]" * 100_000,
            "unknown arch": {**meta, "arch": {"name": "nope", "kwargs": {}}},
            "kwargs not an object": {**meta, "arch": {"name": "lenet5", "kwargs": []}},
            "huge kwargs": {**meta, "arch": {"name": "lenet300_100", "kwargs": {"in_features": 2_000_000}}},
            }[case]
    _rewrite(path, tensors, meta)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    with pytest.raises(NetshrinkFormatError) as info:
        load_model(path)
    assert "\n" not in str(info.value)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert grown_mib < 512, f"refusing the file raised peak memory by {grown_mib:.0f} MiB"  # a build: 2.4 GB


def _checkpoint_to_resume(tmp_path, digits):
    from netshrink.train import fit

    config = FitConfig(epochs=2, batch_size=256)
    fit(TINY_MODELS["user_mlp"](), digits, config, out_dir=tmp_path, progress=False)
    path = tmp_path / "checkpoint.safetensors"
    tensors = dict(load_checkpoint(path)[0])
    with safe_open(str(path), framework="pt") as handle:
        meta = json.loads(handle.metadata()["netshrink"])
    return config, path, tensors, meta


def test_resume_from_malformed_state_is_a_format_error(tmp_path, digits):
    from netshrink.train import fit

    config, path, tensors, meta = _checkpoint_to_resume(tmp_path, digits)
    optimizer = meta["optimizer"]
    cases = [
        ({**tensors, "optim.0": torch.zeros(1)}, meta),
        ({**tensors, "optim.a.b": torch.zeros(1)}, meta),
        (tensors, {**meta, "optimizer": {**optimizer, "state_scalars": []}}),
        (tensors, {**meta, "optimizer": {k: v for k, v in optimizer.items() if k != "param_groups"}}),
        ({**tensors, "rng.torch.0": tensors["rng.torch.0"].float()}, meta),
    ]
    for bad_tensors, bad_meta in cases:
        _rewrite(path, bad_tensors, bad_meta)
        with pytest.raises(NetshrinkFormatError) as info:
            fit(TINY_MODELS["user_mlp"](), digits, config, out_dir=tmp_path, resume=True, progress=False)
        assert "\n" not in str(info.value)
