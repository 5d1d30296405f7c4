"""save/load of the .nsk container: each tensor kind in every tiny model, bit-identical outputs."""

import json
import os

import numpy as np
import pytest
import safetensors.numpy
import torch
from safetensors import safe_open
from torch import nn
from torch.nn.utils import parametrize

from netshrink.codec.container import load, read_tensors, save
from netshrink.codec.document import read_document
from netshrink.codec.tensor_encodings import tensor_bits
from netshrink.core import apply_
from netshrink.core.errors import NetshrinkError, NetshrinkFormatError
from netshrink.core.selection import select
from netshrink.core.transform_log import append_record, get_arch, get_log
from netshrink.measure.size import dense_fp32_bytes
from netshrink.models import create
from tests.models import INPUT_SHAPE, TINY_MODELS, UserMLP
from tests.techniques import ShrinkHead

KINDS = ("pruned", "clustered16", "clustered32", "int4", "binary", "dense", "pruned_clustered")
EXPECTED = {
    "pruned": {("sparse", "dense"), ("sparse", "float_bytes")},
    "clustered16": {("codebook",)},
    "clustered32": {("codebook",)},
    "int4": {("int",)},
    "binary": {("binary",)},
    "dense": {("dense",), ("float_bytes",)},
    "pruned_clustered": {("codebook",), ("sparse", "codebook")},
}


def make_weight(kind: str, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """A float32 tensor holding exactly what ``kind`` names (as a compression stage leaves it)."""
    dense = torch.randn(shape, generator=generator)
    if kind == "dense":
        return dense
    if kind in ("pruned", "pruned_clustered"):
        threshold = dense.abs().flatten().kthvalue(max(1, int(0.9 * dense.numel()))).values
        pruned = torch.where(dense.abs() > threshold, dense, torch.zeros(()))
        if kind == "pruned":
            return pruned
        centroids = torch.randn(16, generator=generator)
        nearest = (pruned.reshape(-1, 1) - centroids).abs().argmin(dim=1).reshape(shape)
        return torch.where(pruned != 0, centroids[nearest], torch.zeros(()))
    if kind.startswith("clustered"):
        centroids = torch.randn(int(kind.removeprefix("clustered")), generator=generator)
        return centroids[torch.randint(0, centroids.numel(), shape, generator=generator)]
    if kind == "int4":
        q = torch.randint(0, 16, shape, generator=generator)
        return (q - 8).to(torch.float32) * torch.tensor(0.0123, dtype=torch.float32)
    if kind == "binary":
        alpha = torch.rand((shape[0],) + (1,) * (len(shape) - 1), generator=generator) + 0.1
        signs = torch.randint(0, 2, shape, generator=generator) * 2 - 1
        return signs * alpha
    raise ValueError(kind)


def fill_weights(model: nn.Module, kind: str, seed: int = 0) -> list[str]:
    """Replace every Linear/Conv weight by a tensor of ``kind``; returns their state-dict names."""
    generator = torch.Generator().manual_seed(seed)
    names = []
    with torch.no_grad():
        for name, module in select(model).items():
            module.weight.copy_(make_weight(kind, tuple(module.weight.shape), generator))
            names.append(f"{name}.weight")
    return names


def fresh(model_name: str) -> nn.Module:
    torch.manual_seed(1)  # a different init: every value must come from the file
    return TINY_MODELS[model_name]()


def is_zoo(model: nn.Module) -> bool:
    return get_arch(model) is not None


def load_like(path, model: nn.Module, model_name: str) -> nn.Module:
    return load(path) if is_zoo(model) else load(path, model=fresh(model_name))


def assert_same_outputs(saved: nn.Module, loaded: nn.Module, input_shape=INPUT_SHAPE) -> None:
    saved.eval()
    x = torch.randn(5, *input_shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(saved(x), loaded(x))
    loaded_state = loaded.state_dict()
    for name, tensor in saved.state_dict().items():
        assert tensor.dtype == loaded_state[name].dtype, name
        assert np.array_equal(tensor_bits(tensor), tensor_bits(loaded_state[name])), name


def chains(path) -> dict[str, tuple[str, ...]]:
    _, specs, _ = read_tensors(path)
    return {name: tuple(spec.chain) for name, spec in specs.items()}


#: least ratio dense fp32 bytes / .nsk bytes for the tiny models (user_resnet, 858 values in 16
#: tensors, is the floor: its BatchNorm vectors stay dense and names dominate the header)
TINY_RATIO = {"dense": 1.0, "pruned_clustered": 1.8}
TINY_RATIO_COMPRESSED = 1.4


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_round_trips_in_every_model(tiny_model, kind, tmp_path, request):
    model_name = request.node.callspec.params["tiny_model"]
    names = fill_weights(tiny_model, kind)
    tiny_model.eval()
    path = tmp_path / "model.nsk"
    save(tiny_model, path)
    stored = chains(path)
    for name in names:
        if tiny_model.state_dict()[name].numel() >= 128:  # below that, the metadata bytes decide
            assert stored[name] in EXPECTED[kind], (name, stored[name])
    assert_same_outputs(tiny_model, load_like(path, tiny_model, model_name))
    ratio = dense_fp32_bytes(tiny_model) / os.path.getsize(path)
    assert ratio > TINY_RATIO.get(kind, TINY_RATIO_COMPRESSED), (os.path.getsize(path), ratio)


def test_fresh_model_file_is_smaller_than_dense_fp32(tiny_model, tmp_path):
    """Lossless path on the model as built: random float weights, BatchNorm defaults."""
    save(tiny_model, tmp_path / "m.nsk")
    assert os.path.getsize(tmp_path / "m.nsk") < dense_fp32_bytes(tiny_model)


@pytest.mark.parametrize("kind", ["pruned_clustered", "binary", "int4"])
def test_compressed_lenet_is_much_smaller_than_dense_fp32(kind, tmp_path):
    model = create("lenet300_100")
    fill_weights(model, kind)
    save(model, tmp_path / "m.nsk")
    ratio = dense_fp32_bytes(model) / os.path.getsize(tmp_path / "m.nsk")
    assert ratio >= {"pruned_clustered": 20, "binary": 25, "int4": 7}[kind]
    assert_same_outputs(model, load(tmp_path / "m.nsk"), input_shape=(784,))


def test_without_entropy_stage_pruned_clustered_uses_relative_index(tmp_path):
    model = create("lenet300_100", in_features=64)
    fill_weights(model, "pruned_clustered")
    save(model, tmp_path / "m.nsk", entropy="none")
    stored = chains(tmp_path / "m.nsk")
    assert stored["fc1.weight"] == ("sparse", "codebook")
    assert_same_outputs(model, load(tmp_path / "m.nsk"))


@pytest.mark.parametrize("entropy", ["none", "huffman", "ans"])
def test_forced_entropy_method_is_used_for_every_symbol_stream(entropy, tmp_path):
    model = create("lenet300_100", in_features=64)
    fill_weights(model, "clustered16")
    save(model, tmp_path / "m.nsk", entropy=entropy)
    _, specs, _ = read_tensors(tmp_path / "m.nsk")
    methods = {s.method for spec in specs.values() for s in spec.streams.values() if s.kind == "symbols"}
    assert methods == {entropy}
    assert_same_outputs(model, load(tmp_path / "m.nsk"))


def test_special_values_and_dtypes_are_bit_exact(tmp_path):
    class Holder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            special = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), 1e-45, -1e-45, 3.5] * 4)
            nan_payload = torch.tensor([0x7FC00001, 0x7FC00000, -0x00400001], dtype=torch.int32).view(torch.float32)
            self.a = nn.Parameter(special.reshape(4, 7))
            self.register_buffer("nans", nan_payload)
            self.register_buffer("fp16", torch.randn(6, 5).half())
            self.register_buffer("brain", torch.randn(6, 5).bfloat16())
            self.register_buffer("half_zeros", torch.tensor([0.0, -0.0] * 8).half())
            self.register_buffer("steps", torch.tensor(7, dtype=torch.int64))
            self.register_buffer("flags", torch.tensor([True, False, True]))
            self.register_buffer("fp64", torch.randn(3, dtype=torch.float64))
            self.register_buffer("empty", torch.zeros(0, 4))

    model = Holder()
    save(model, tmp_path / "h.nsk", keep_zero_sign=True)
    loaded = load(tmp_path / "h.nsk", model=Holder())
    for name, tensor in model.state_dict().items():
        other = loaded.state_dict()[name]
        assert tensor.dtype == other.dtype and tensor.shape == other.shape
        assert (tensor_bits(tensor) == tensor_bits(other)).all(), name


def test_batchnorm_buffers_are_stored_as_they_are(tmp_path):
    model = TINY_MODELS["convnet"]()
    model.train()
    model(torch.randn(4, *INPUT_SHAPE))  # running stats and num_batches_tracked move
    save(model, tmp_path / "c.nsk")
    loaded = load(tmp_path / "c.nsk")
    assert int(loaded.features[0][1].num_batches_tracked) == 1
    assert chains(tmp_path / "c.nsk")["features.0.1.num_batches_tracked"] == ("dense",)
    assert_same_outputs(model, loaded)


def test_requested_encoding_is_honoured_when_exact_else_detected(tmp_path):
    model = create("lenet300_100", in_features=64)
    fill_weights(model, "clustered16")
    with torch.no_grad():
        model.fc3.weight.normal_()
    save(model, tmp_path / "m.nsk",
         encodings={"fc1.weight": "dense", "fc3.weight": "codebook", "fc2.weight": "sparse+codebook"})
    stored = chains(tmp_path / "m.nsk")
    assert stored["fc1.weight"] == ("dense",)
    assert stored["fc2.weight"] == ("sparse", "codebook")
    assert stored["fc3.weight"] in {("dense",), ("float_bytes",)}  # 1000 distinct values: no codebook
    loaded = load(tmp_path / "m.nsk")
    assert_same_outputs(model, loaded)
    assert get_log(loaded) == get_log(model)


def test_user_class_needs_model_argument(tmp_path):
    save(UserMLP(), tmp_path / "u.nsk")
    with pytest.raises(NetshrinkFormatError, match="model="):
        load(tmp_path / "u.nsk")


def _shrunk(model: nn.Module) -> nn.Module:
    return apply_(model, ShrinkHead(outputs=10))


def test_replay_rebuilds_zoo_structure(tmp_path):
    model = _shrunk(create("lenet300_100", in_features=64))
    save(model, tmp_path / "s.nsk")
    loaded = load(tmp_path / "s.nsk")
    assert loaded.fc3.bias is None
    assert_same_outputs(model, loaded)
    assert get_arch(loaded) == get_arch(model)


def test_replay_applies_to_a_users_base_model(tmp_path):
    model = _shrunk(UserMLP())
    save(model, tmp_path / "s.nsk")
    assert_same_outputs(model, load(tmp_path / "s.nsk", model=UserMLP()))  # replayed
    assert_same_outputs(model, load(tmp_path / "s.nsk", model=_shrunk(UserMLP())))  # already shrunk


def test_save_refuses_a_log_load_could_not_replay(tmp_path):
    model = create("lenet300_100", in_features=64)
    append_record(model, "never_registered_verb", None)
    with pytest.raises(NetshrinkError, match="cannot save.*never_registered_verb"):
        save(model, tmp_path / "v.nsk")
    assert not (tmp_path / "v.nsk").exists()


def test_save_refuses_a_structural_change_nobody_logged(tmp_path):
    model = create("lenet300_100", in_features=64)
    model.fc3 = nn.Linear(100, 10, bias=False)  # edited by hand: load would rebuild the original
    with pytest.raises(NetshrinkError, match="cannot save.*fc3.bias"):
        save(model, tmp_path / "h.nsk")
    assert not (tmp_path / "h.nsk").exists()


def test_unknown_verb_in_a_file_is_a_format_error(tmp_path):
    model = apply_(create("lenet300_100", in_features=64), ShrinkHead(outputs=10))
    save(model, tmp_path / "v.nsk")
    with safe_open(str(tmp_path / "v.nsk"), framework="numpy") as handle:
        stored, streams = handle.metadata()["netshrink"], handle.get_tensor("streams")
    assert "deflated" in json.loads(stored)  # this small model's document is stored deflated
    text = json.dumps(read_document(stored))
    assert "test_shrink_head" in text
    renamed = text.replace("test_shrink_head", "never_registered")
    (tmp_path / "v.nsk").write_bytes(safetensors.numpy.save({"streams": streams}, metadata={"netshrink": renamed}))
    with pytest.raises(NetshrinkFormatError, match="never_registered"):
        load(tmp_path / "v.nsk")


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "a.nsk"
    save(UserMLP(), path)
    before = path.read_bytes()

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        save(create("lenet300_100", in_features=64), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nsk"]


def test_parametrized_model_is_refused(tmp_path):
    class Double(nn.Module):
        def forward(self, w):
            return 2 * w

    model = UserMLP()
    parametrize.register_parametrization(model.head, "weight", Double())
    with pytest.raises(NetshrinkError, match="finalize_"):
        save(model, tmp_path / "p.nsk")
    assert not (tmp_path / "p.nsk").exists()


def test_unknown_entropy_method_is_refused(tmp_path):
    with pytest.raises(NetshrinkError, match="entropy"):
        save(UserMLP(), tmp_path / "e.nsk", entropy="zstd")


def test_dense_fp32_bytes_is_the_safetensors_size_of_the_state_dict(tmp_path):
    model = TINY_MODELS["convnet"]().half()
    arrays = {k: (v.float() if v.is_floating_point() else v).numpy() for k, v in model.state_dict().items()}
    safetensors.numpy.save_file(arrays, tmp_path / "d.safetensors")
    assert dense_fp32_bytes(model) == os.path.getsize(tmp_path / "d.safetensors")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cast_zoo_model_loads_in_its_saved_dtype(dtype, tmp_path):
    model = create("lenet300_100", in_features=64)
    fill_weights(model, "pruned_clustered")
    model = model.to(dtype)
    save(model, tmp_path / "c.nsk")
    loaded = load(tmp_path / "c.nsk")
    assert loaded.fc1.weight.dtype == dtype and loaded.fc1.weight.requires_grad
    x = torch.randn(3, 64).to(dtype)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), loaded(x))


def test_tied_weights_stay_tied(tmp_path):
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(8, 8)
            self.b = nn.Linear(8, 8)
            self.b.weight = self.a.weight

        def forward(self, x):
            return self.b(self.a(x))

    save(Tied(), tmp_path / "t.nsk")
    loaded = load(tmp_path / "t.nsk", model=Tied())
    assert loaded.a.weight is loaded.b.weight


def _fresh_like(model: nn.Module) -> nn.Module | None:
    """The ``model=`` argument load needs: None for a zoo model, a new instance of a user's class."""
    return None if is_zoo(model) else type(model)()


def test_negative_zeros_of_mask_pruning_are_stored_as_zeros(tmp_path, tiny_model):
    """torch.nn.utils.prune (like any ``w * mask``) leaves -0.0 where negative weights were removed:
    by default they cost nothing, outputs stay equal; keep_zero_sign keeps every bit at a price."""
    from torch.nn.utils import prune

    for module in tiny_model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            prune.l1_unstructured(module, "weight", amount=0.9)
            prune.remove(module, "weight")
    assert any(bool(torch.signbit(p[p == 0]).any()) for p in tiny_model.parameters())
    save(tiny_model, tmp_path / "folded.nsk")
    save(tiny_model, tmp_path / "exact.nsk", keep_zero_sign=True)
    folded, exact = load(tmp_path / "folded.nsk", model=_fresh_like(tiny_model)), \
        load(tmp_path / "exact.nsk", model=_fresh_like(tiny_model))
    tiny_model.eval()
    x = torch.randn(5, *INPUT_SHAPE, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(tiny_model(x), folded(x))
    for name, tensor in tiny_model.state_dict().items():
        assert torch.equal(tensor, folded.state_dict()[name])
        assert np.array_equal(tensor_bits(tensor), tensor_bits(exact.state_dict()[name])), name
        if tensor.is_floating_point():
            assert not torch.signbit(folded.state_dict()[name][tensor == 0]).any()
    assert os.path.getsize(tmp_path / "folded.nsk") < os.path.getsize(tmp_path / "exact.nsk")


def test_torch_pruned_lenet_saves_small(tmp_path):
    """A full-size LeNet-300-100 pruned 90% by another tool is detected as sparse and stored small."""
    from torch.nn.utils import prune

    torch.manual_seed(0)
    model = create("lenet300_100")
    for module in (model.fc1, model.fc2, model.fc3):
        prune.l1_unstructured(module, "weight", amount=0.9)
        prune.remove(module, "weight")
    save(model, tmp_path / "p.nsk")
    assert chains(tmp_path / "p.nsk")["fc1.weight"][0] == "sparse"
    assert dense_fp32_bytes(model) / os.path.getsize(tmp_path / "p.nsk") > 9.0
