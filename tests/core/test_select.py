"""core.select: the one place that says which layers a technique acts on."""

import pytest
from torch import nn
from torch.nn.utils import parametrize

from netshrink.core import ConfigError, select
from netshrink.core.selection import check_layer_names, weight_name


class Zoo(nn.Module):
    """One of each kind of layer; the attribute order is deliberately not alphabetical."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(4, 2)
        self.embed = nn.Embedding(5, 4)
        self.conv3 = nn.Conv3d(1, 1, 1)
        self.conv1 = nn.Conv1d(1, 1, 1)
        self.block = nn.Sequential(nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1), nn.ReLU())
        self.attn = nn.MultiheadAttention(4, 2)  # packed q/k/v: in_proj_weight
        self.cross = nn.MultiheadAttention(4, 2, kdim=3, vdim=3)  # separate q/k/v: no in_proj_weight


WEIGHTED = ["head", "conv3", "conv1", "block.0", "attn.out_proj", "cross.out_proj"]


def test_the_default_is_every_linear_and_conv_layer_in_model_order():
    assert list(select(Zoo())) == WEIGHTED


def test_named_layers_come_back_in_model_order_once():
    model = Zoo()
    chosen = select(model, layers=("block.0", "head", "block.0"))
    assert list(chosen) == ["head", "block.0"]
    assert chosen["head"] is model.head


def test_an_unknown_name_is_one_line_naming_it_and_the_available_layers():
    with pytest.raises(ConfigError) as error:
        select(Zoo(), layers=("head", "tail"))
    message = str(error.value)
    assert "\n" not in message
    assert "unknown layer name(s) ['tail'] in Zoo" in message and str(WEIGHTED) in message


def test_a_name_of_another_kind_is_one_line_saying_what_it_is():
    with pytest.raises(ConfigError) as error:
        select(Zoo(), layers=("block.1",))
    assert "layer 'block.1' is a BatchNorm2d, not a Linear/Conv1d/Conv2d/Conv3d" in str(error.value)
    assert "\n" not in str(error.value)


def test_filter_fn_narrows_the_kinds_and_never_widens_them():
    model = Zoo()
    assert list(select(model, filter_fn=lambda m, n: isinstance(m, nn.Conv2d))) == ["block.0"]
    assert list(select(model, filter_fn=lambda m, n: n.startswith("block"))) == ["block.0"]
    assert list(select(model, filter_fn=lambda m, n: True)) == WEIGHTED  # not the BatchNorm, not the Embedding
    assert select(model, filter_fn=lambda m, n: False) == {}


def test_named_layers_win_over_filter_fn():
    assert list(select(Zoo(), layers=("head",), filter_fn=lambda m, n: False)) == ["head"]


def test_kinds_widen_the_candidates_to_embeddings_and_packed_attention():
    model = Zoo()
    kinds = (nn.Linear, nn.Embedding, nn.MultiheadAttention)
    chosen = select(model, kinds=kinds)
    assert list(chosen) == ["head", "embed", "attn", "attn.out_proj", "cross.out_proj"]
    assert weight_name(chosen["attn"]) == "in_proj_weight" and weight_name(chosen["head"]) == "weight"
    with pytest.raises(ConfigError, match="layer 'cross' has no in_proj_weight tensor"):
        select(model, layers=("cross",), kinds=kinds)
    with pytest.raises(ConfigError, match="layer 'head' is a Linear, not a Conv2d"):
        select(model, layers=("head",), kinds=(nn.Conv2d,))


def test_refuse_parametrized_refuses_only_chosen_layers_that_carry_one():
    class Double(nn.Module):
        def forward(self, w):
            return 2 * w

    model = Zoo()
    parametrize.register_parametrization(model.head, "weight", Double())
    assert "head" in select(model)  # allowed unless asked
    assert list(select(model, layers=("conv1",), refuse_parametrized=True)) == ["conv1"]
    with pytest.raises(ConfigError, match="layer 'head' carries masks .* call finalize_"):
        select(model, refuse_parametrized=True)


@pytest.mark.parametrize("layers", ["head", (), ("head", 3)])
def test_config_layer_lists_must_be_non_empty_lists_of_names(layers):
    with pytest.raises(ConfigError, match="layers must be a non-empty list of layer names"):
        check_layer_names(layers)
    check_layer_names(None)
    check_layer_names(("head",))
