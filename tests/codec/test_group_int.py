"""``group_int``: per-channel and per-group integer grids stored as integers plus float16 scales and
zero points, found from the values alone and reproduced bit for bit."""

import numpy as np
import pytest
import torch

from netshrink.codec.encodings.group_int import GroupInt
from netshrink.codec.tensor_encodings import decode_streams, encode_tensor, tensor_bits
from netshrink.core.errors import NetshrinkFormatError
from netshrink.quant import calibrate


def _quantized(rows: int, columns: int, bits: int, scheme: str, group: int = 0, scale: float = 0.05) -> torch.Tensor:
    weight = torch.randn(rows, columns, generator=torch.Generator().manual_seed(rows + bits)) * scale
    return calibrate(weight, bits, scheme, True, "minmax", group_size=group).fake_quantize(weight)


def _decoded(encoded, tensor: torch.Tensor) -> torch.Tensor:
    return decode_streams(encoded.chain, encoded.params, {s.role: s for s in encoded.streams}, "float32",
                          list(tensor.shape))


@pytest.mark.parametrize("effort, prefer", [("max", None), ("default", "group_int")])
def test_int8_per_channel_is_a_quarter_of_fp32_with_half_scales(effort, prefer):
    weight = _quantized(300, 256, 8, "symmetric")
    encoded = encode_tensor(weight, effort=effort, prefer=prefer)
    assert encoded.chain == ["group_int"]
    assert encoded.params["group_int"] == {"bits": 8, "group": 256, "scales": "float16"}
    assert encoded.cost() <= weight.numel() + 300 * (2 + 1) + 512  # a byte a weight, scale and zero point a row
    assert np.array_equal(tensor_bits(_decoded(encoded, weight)), tensor_bits(weight))


def test_the_default_effort_leaves_grids_it_was_not_told_of_raw():
    """Searching a wide float for grids is effort max's (a model dequantized from GGUF was 60x
    safetensors' save time that way); ``save`` names the grids its techniques made (below)."""
    weight = _quantized(300, 256, 8, "symmetric")
    assert encode_tensor(weight, effort="default").chain == ["dense"]


def test_a_model_quantized_per_channel_saves_as_integers_at_the_default_effort(tmp_path):
    """Its log's quantize record names the grids (``Technique.stored_as``): the same weights without
    that record are stored raw at the default effort."""
    from torch import nn

    from netshrink import Quantize, finalize_, quantize_
    from netshrink.codec.container import load, save

    def build():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(512, 256))  # above the default effort's sample size

    model = finalize_(quantize_(build(), Quantize(bits=8, granularity="channel")))
    unlogged = build()
    unlogged.load_state_dict(model.state_dict())
    save(model, tmp_path / "logged.nsk")
    save(unlogged, tmp_path / "unlogged.nsk")
    logged, raw = ((tmp_path / f"{n}.nsk").stat().st_size for n in ("logged", "unlogged"))
    assert logged < raw / 3.5
    loaded = load(tmp_path / "logged.nsk", model=build())
    assert all(torch.equal(loaded.state_dict()[name], tensor) for name, tensor in model.state_dict().items())


@pytest.mark.parametrize("group", [32, 64, 128])
def test_4_bit_groups_are_found_and_stored_in_half_a_byte(group):
    weight = _quantized(64, 256, 4, "affine", group)
    encoded = encode_tensor(weight)
    assert encoded.chain == ["group_int"] and encoded.params["group_int"]["group"] == group
    groups = weight.numel() // group
    assert encoded.cost() <= weight.numel() / 2 + groups * (2 + 1) + 512
    assert torch.equal(_decoded(encoded, weight), weight)


def test_pruned_weights_stay_exact_zeros_and_cost_less():
    weight = _quantized(128, 128, 4, "symmetric", 32)
    pruned = weight * (torch.rand(weight.shape, generator=torch.Generator().manual_seed(1)) > 0.5)
    pruned = torch.where(pruned == 0, torch.zeros(()), pruned)  # save stores -0.0 as +0.0
    encoded = encode_tensor(pruned, prefer="group_int")
    assert encoded.chain == ["group_int"]
    decoded = _decoded(encoded, pruned)
    assert torch.equal(decoded == 0, pruned == 0) and torch.equal(decoded, pruned)
    assert encoded.cost() < encode_tensor(weight, prefer="group_int").cost()


def test_scales_float16_cannot_hold_are_kept_in_the_tensors_dtype():
    weight = _quantized(16, 64, 8, "symmetric", scale=1e-5)  # scales about 3e-7: below float16's normal range
    encoded = encode_tensor(weight, prefer="group_int")
    assert encoded.chain == ["group_int"] and encoded.params["group_int"]["scales"] == "float32"
    assert torch.equal(_decoded(encoded, weight), weight)


def test_tensors_not_on_grids_are_left_to_the_other_encodings():
    dense = torch.randn(64, 64, generator=torch.Generator().manual_seed(0))
    assert GroupInt().encode(tensor_bits(dense), "float32", [64, 64], "auto") is None
    per_tensor = calibrate(dense, 8, "symmetric", False, "minmax").fake_quantize(dense)
    assert encode_tensor(per_tensor).chain == ["int"]  # one grid: no scale per row to pay for
    signs = torch.sign(dense) * torch.rand(64, 1)
    assert GroupInt().encode(tensor_bits(signs), "float32", [64, 64], "auto") is None  # binary's


@pytest.mark.parametrize("params,shape,message", [
    ({"bits": 4, "group": 24, "scales": "float16"}, [4, 64], "does not divide"),
    ({"bits": 4, "group": 128, "scales": "float16"}, [4, 64], "group must be an integer"),
    ({"bits": 17, "group": 32, "scales": "float16"}, [4, 64], "bits must be an integer"),
    ({"bits": 4, "group": 32, "scales": "int8"}, [4, 64], "scales must be one of"),
    ({"bits": 4, "group": 32, "scales": "float16"}, [256], "at least 2 dimensions"),
])
def test_parameters_from_a_file_are_checked(params, shape, message):
    with pytest.raises(NetshrinkFormatError, match=message):
        GroupInt().check({"group_int": params}, "float32", shape, int(np.prod(shape)))


class _TiedHead(torch.nn.Module):
    """An embedding whose weight is also the output head's (as a language model ties them)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(512, 256)
        self.head = torch.nn.Linear(256, 512, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids):
        return self.head(self.embed(ids))


def test_a_tied_weight_quantized_under_its_second_name_is_stored_as_integers(tmp_path):
    """The tensor is written once under its first name (``embed.weight``); the quantize record names
    ``head.weight``, which must still decide its encoding."""
    from netshrink import Quantize, finalize_, quantize_
    from netshrink.codec.container import load, save

    model = finalize_(quantize_(_TiedHead(), Quantize(bits={"head": 8}, granularity="channel")))
    assert model.head.weight is model.embed.weight
    save(model, tmp_path / "tied.nsk")
    save(_TiedHead(), tmp_path / "raw.nsk")
    assert (tmp_path / "tied.nsk").stat().st_size < (tmp_path / "raw.nsk").stat().st_size / 3.5
    loaded = load(tmp_path / "tied.nsk", model=_TiedHead())
    assert torch.equal(loaded.head.weight, model.head.weight) and loaded.head.weight is loaded.embed.weight
