"""Uniform quantization: grids, calibration, straight-through training, fp16/bf16, file size."""

import pytest
import torch

import netshrink
from netshrink.codec.inspect import inspect_file
from netshrink.core import finalize_
from netshrink.core.errors import ConfigError
from netshrink.quant import Quantize, calibrate, quantize_
from netshrink.quant.uniform import FakeQuantize
from netshrink.train import FitConfig, fit
from tests.models import TINY_MODELS
from tests.quant.helpers import TokenClassifier, distinct, round_trip, weight_tensors


@pytest.mark.parametrize("scheme", ["symmetric", "affine"])
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_per_tensor_weights_lie_on_one_grid_of_2_to_the_bits_points(tiny_model, bits, scheme):
    original = weight_tensors(tiny_model)
    quantize_(tiny_model, Quantize(bits=bits, scheme=scheme))
    finalize_(tiny_model)
    for name, weight in weight_tensors(tiny_model).items():
        values = torch.unique(weight.double())
        assert values.numel() <= 2**bits, name
        grid_step = float((values[1:] - values[:-1]).min())
        multiples = values / grid_step
        assert torch.allclose(multiples, multiples.round(), atol=1e-3), name  # a grid through zero
        assert float((weight - original[name]).abs().max()) <= grid_step / 2 + 1e-6, name  # minmax: no clipping


def test_symmetric_grid_is_centred_on_zero():
    weight = torch.randn(16, 9) + 0.5
    grid = calibrate(weight, 4, "symmetric", per_channel=False, method="minmax")
    assert int(grid.zero_point) == 0 and (grid.qmin, grid.qmax) == (-7, 7)
    assert float(grid.scale) == pytest.approx(float(weight.abs().max()) / 7)


def test_per_channel_grids_follow_each_row():
    torch.manual_seed(0)
    weight = torch.randn(6, 50) * torch.logspace(-2, 1, 6)[:, None]  # rows of very different ranges
    per_tensor = calibrate(weight, 4, "symmetric", False, "minmax").fake_quantize(weight)
    per_channel = calibrate(weight, 4, "symmetric", True, "minmax").fake_quantize(weight)
    for row in per_channel:
        assert distinct(row) <= 15
    assert (per_channel - weight).pow(2).sum() < (per_tensor - weight).pow(2).sum()
    assert distinct(per_tensor[0]) <= 2  # the smallest row collapses on a shared grid


def test_calibration_methods_trade_clipping_for_resolution():
    torch.manual_seed(0)
    weight = torch.randn(4000)
    weight[0] = 40.0  # one outlier
    errors = {}
    for method in ("minmax", "percentile", "mse"):
        grid = calibrate(weight, 4, "symmetric", False, method, percentile=99.9)
        errors[method] = float((grid.fake_quantize(weight) - weight).pow(2).sum())
    assert errors["mse"] <= errors["minmax"] and errors["mse"] <= errors["percentile"] * 1.01
    assert errors["percentile"] < errors["minmax"]


def test_straight_through_gradient_is_one_inside_the_range_and_zero_where_clipped():
    weight = torch.tensor([[-3.0, -0.5, 0.2, 0.9, 3.0]], requires_grad=True)
    grid = calibrate(torch.tensor([[-1.0, 1.0]]), 4, "symmetric", False, "minmax")
    FakeQuantize(grid)(weight).sum().backward()
    assert weight.grad.tolist() == [[0.0, 1.0, 1.0, 1.0, 0.0]]


@pytest.mark.slow
def test_quantization_aware_training_through_fit_trains_the_full_precision_weights(digits, tmp_path):
    torch.manual_seed(0)
    model = TINY_MODELS["user_mlp"]()
    quantize_(model, Quantize(bits=3))
    original = model.head.parametrizations.weight.original
    before = original.detach().clone()
    fit(model, digits, FitConfig(epochs=1, batch_size=128, lr=0.05), out_dir=tmp_path, progress=False)
    assert model.head.parametrizations.weight.original is original  # the optimizer's Parameter survives
    assert not torch.equal(before, original.detach())
    for name, weight in weight_tensors(model).items():
        assert distinct(weight) <= 8, name


@pytest.mark.parametrize("fmt,dtype", [("fp16", torch.float16), ("bf16", torch.bfloat16)])
def test_float16_formats_round_each_weight(tiny_model, fmt, dtype):
    original = weight_tensors(tiny_model)
    quantize_(tiny_model, Quantize(bits=fmt))
    finalize_(tiny_model)
    for name, weight in weight_tensors(tiny_model).items():
        assert weight.dtype == torch.float32
        assert torch.equal(weight, original[name].to(dtype).float()), name


def test_mixed_precision_by_name_and_by_filter():
    torch.manual_seed(0)
    model = TINY_MODELS["lenet5"]()
    names = list(weight_tensors(model))
    quantize_(model, Quantize(bits={names[0]: 8, names[-1]: 2}))
    quantize_(model, Quantize(bits=4, filter_fn=lambda m, n: n == names[1]))
    finalize_(model)
    weights = weight_tensors(model)
    assert 16 < distinct(weights[names[0]]) <= 255
    assert distinct(weights[names[1]]) <= 16 and distinct(weights[names[-1]]) <= 3
    assert distinct(weights[names[2]]) > 255  # left in fp32


def test_embedding_layers_are_quantized_per_row(tmp_path):
    torch.manual_seed(0)
    model = TokenClassifier()
    quantize_(model, Quantize(bits=4, granularity="channel"))
    finalize_(model)
    for row in model.embed.weight:
        assert distinct(row) <= 15
    loaded, _ = round_trip(model, TokenClassifier(), tmp_path / "tokens.nsk")
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(loaded(x), model.eval()(x))


def test_group_granularity_puts_one_grid_on_each_group_of_a_row_embeddings_included(tmp_path):
    torch.manual_seed(0)
    model = TokenClassifier(dim=32)
    quantize_(model, Quantize(bits=4, scheme="affine", granularity="group", group_size=16))
    finalize_(model)
    for name, weight in weight_tensors(model).items():
        groups = weight.reshape(-1, 16)
        assert all(distinct(group) <= 16 for group in groups), name
        assert distinct(weight) > 16  # each group has its own grid
    loaded, _ = round_trip(model, TokenClassifier(dim=32), tmp_path / "groups.nsk")
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(loaded(x), model.eval()(x))
    encodings = {row["name"]: row["encoding"] for row in inspect_file(tmp_path / "groups.nsk")}
    assert encodings["embed.weight"] == encodings["hidden.weight"] == "group_int"


def test_per_channel_and_group_grids_are_stored_as_integers_not_floats(tmp_path):
    sizes = {}
    for granularity, bits in (("channel", 8), ("group", 4)):
        torch.manual_seed(0)
        model = TokenClassifier(vocab=256, dim=64)
        quantize_(model, Quantize(bits=bits, granularity=granularity, group_size=32))
        finalize_(model)
        _, sizes[granularity] = round_trip(model, TokenClassifier(vocab=256, dim=64), tmp_path / "m.nsk")
    weights = weight_tensors(model)
    n_weights = sum(w.numel() for w in weights.values())
    others = 4 * sum(p.numel() for n, p in model.named_parameters() if n.endswith("bias"))
    rows = sum(w.shape[0] for w in weights.values())
    assert sizes["channel"] <= n_weights + 3 * rows + others + 4096  # a byte a weight, a half scale and zero a row
    assert sizes["group"] <= n_weights / 2 + 3 * n_weights / 32 + others + 4096


def test_saved_file_shrinks_with_the_bits(tmp_path):
    sizes = {}
    for bits in (2, 4, 8, "fp16", 32):
        torch.manual_seed(0)
        model = TINY_MODELS["lenet300_100"]()
        if bits != 32:
            quantize_(model, Quantize(bits=bits))
        finalize_(model)
        _, sizes[bits] = round_trip(model, None, tmp_path / f"q{bits}.nsk")
    n_weights = sum(w.numel() for w in weight_tensors(model).values())
    for bits in (2, 4, 8):
        assert sizes[bits] <= n_weights * bits / 8 + 4096, (bits, sizes[bits])  # biases + header within 4 KB
    assert sizes[2] < sizes[4] < sizes[8] < sizes["fp16"] < sizes[32]
    assert sizes["fp16"] <= 0.6 * sizes[32]


def test_a_group_size_that_does_not_divide_a_layer_is_refused_in_one_line():
    model = TokenClassifier(dim=16)
    with pytest.raises(ConfigError, match="group_size 12 does not divide the 16 columns of layer 'embed'"):
        quantize_(model, Quantize(bits=4, granularity="group", group_size=12))
    assert not netshrink.get_log(model)
    with pytest.raises(ConfigError, match="group_size must be a positive integer"):
        Quantize(granularity="group", group_size=0)


def test_bad_input_is_one_line():
    for bits in (1, 9, 16, "int4", 4.0, True):
        with pytest.raises(ConfigError, match="from 2 to 8 or 'fp16' or 'bf16'"):
            Quantize(bits=bits)
    with pytest.raises(ConfigError, match="unknown scheme"):
        Quantize(scheme="asymmetric")
    with pytest.raises(ConfigError, match="unknown calibration"):
        Quantize(calibration="entropy")
    with pytest.raises(ConfigError, match="percentile must be"):
        Quantize(calibration="percentile", percentile=101)
    torch.manual_seed(0)
    model = TINY_MODELS["lenet300_100"]()
    with torch.no_grad():
        model.fc2.weight[3, 3] = float("inf")
    with pytest.raises(ConfigError, match="'fc2' has 1 NaN or infinite"):
        quantize_(model, Quantize(bits=4))
    assert not any(hasattr(m, "parametrizations") for m in model.modules())  # nothing half-done


def test_activation_grids_are_calibrated_on_data_and_come_back_on_load(digits, tmp_path):
    torch.manual_seed(0)
    model = TINY_MODELS["lenet5"]()
    quantize_(model, Quantize(bits=8, activation_bits=4, calibration="percentile", percentile=99.9,
                              calibration_data=digits.val.x[:200]))
    grids = netshrink.get_log(model)[-1]["activation_grids"]
    assert set(grids) == set(weight_tensors(model))  # every Linear / Conv input
    seen = {}
    for name in grids:
        model.get_submodule(name).register_forward_pre_hook(
            lambda m, args, name=name: seen.__setitem__(name, args[0].detach()))
    model.eval()(digits.test.x[:50])
    for name, inputs in seen.items():
        assert distinct(inputs) <= 16, name
        assert float(inputs.max()) <= grids[name]["scale"] * (grids[name]["qmax"] - grids[name]["zero_point"]) + 1e-6
    finalize_(model)
    loaded, _ = round_trip(model, None, tmp_path / "a.nsk")
    assert torch.equal(loaded(digits.test.x[:50]), model(digits.test.x[:50]))
    torch.manual_seed(0)
    float_model = TINY_MODELS["lenet5"]().eval()
    assert not torch.equal(float_model(digits.test.x[:50]), model(digits.test.x[:50]))


def test_activation_calibration_data_is_checked_in_one_line():
    torch.manual_seed(0)
    model = TINY_MODELS["lenet300_100"]()
    with pytest.raises(ConfigError, match="activation_bits needs calibration_data"):
        quantize_(model, Quantize(bits=4, activation_bits=8))
    with pytest.raises(ConfigError, match="activation_bits must be an integer from 2 to 8"):
        Quantize(bits=4, activation_bits=1, calibration_data=torch.rand(4, 1, 8, 8))
    with pytest.raises(ConfigError, match=r"calibration batch 0 does not fit LeNet300100 \(mat1 and mat2"):
        quantize_(model, Quantize(bits=4, activation_bits=8, calibration_data=torch.rand(4, 1, 28, 28)))
    with pytest.raises(ConfigError, match="calibration batch 0 does not fit"):
        quantize_(model, Quantize(bits=4, activation_bits=8, calibration_data=torch.zeros(4, 64, dtype=torch.long)))
    with pytest.raises(ConfigError, match="calibration_data is empty"):
        quantize_(model, Quantize(bits=4, activation_bits=8, calibration_data=[]))
    assert not any(hasattr(m, "parametrizations") or m._forward_pre_hooks for m in model.modules())


def test_activation_grids_come_back_on_a_users_fresh_instance(digits, tmp_path):
    """load(path, model=MyNet()) replays the log even where the shapes already fit, so the
    activation hooks (which live outside the weights) are reinstalled."""
    torch.manual_seed(0)
    model = TINY_MODELS["user_mlp"]()
    quantize_(model, Quantize(bits=8, activation_bits=3, calibration_data=digits.val.x[:200]))
    finalize_(model)
    netshrink.save(model, tmp_path / "u.nsk")
    loaded = netshrink.load(tmp_path / "u.nsk", model=TINY_MODELS["user_mlp"]())
    x = digits.test.x[:50]
    assert torch.equal(loaded(x), model.eval()(x))
