"""``calibration.hessian``: a layer's input rows reproduce its outputs (Linear, convolutions with
groups, strides, dilation, 'same' and reflect padding), and the running Hessian is 2 X X^T / n."""

import pytest
import torch
from torch import nn

from netshrink.calibration.hessian import LayerInputs, asymmetric_target, input_rows, solvable_layers
from netshrink.core.errors import ConfigError
from netshrink.prune import MagnitudePrune, prune_
from tests.models import UserTransformer

LAYERS = {
    "linear": lambda: nn.Linear(6, 3),
    "conv_groups": lambda: nn.Conv2d(4, 6, 3, padding=1, groups=2),
    "conv_same_reflect": lambda: nn.Conv2d(4, 6, 3, padding="same", padding_mode="reflect"),
    "conv_stride_rect": lambda: nn.Conv2d(3, 5, (3, 2), stride=2, padding=(1, 0)),
    "conv1d_dilated": lambda: nn.Conv1d(4, 6, 3, padding=2, dilation=2),
    "conv1d_depthwise_circular": lambda: nn.Conv1d(4, 4, 3, padding="same", padding_mode="circular", groups=4),
}


def _inputs(layer: nn.Module) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    if isinstance(layer, nn.Linear):
        return torch.randn(2, 5, 6, generator=generator)
    spatial = (7,) if isinstance(layer, nn.Conv1d) else (7, 6)
    return torch.randn(2, layer.in_channels, *spatial, generator=generator)


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_the_rows_times_the_weight_give_the_layers_outputs(kind):
    torch.manual_seed(0)
    layer = LAYERS[kind]()
    x = _inputs(layer)
    rows = input_rows(layer, x)  # (groups, rows, columns)
    weight = layer.weight.detach().flatten(1)
    per_group = weight.shape[0] // rows.shape[0]
    products = torch.cat([rows[g] @ weight[g * per_group:(g + 1) * per_group].T for g in range(rows.shape[0])], dim=1)
    with torch.no_grad():
        out = layer(x) - (layer.bias if isinstance(layer, nn.Linear) else layer.bias.view(-1, *[1] * (x.dim() - 2)))
    expected = out.reshape(-1, weight.shape[0]) if isinstance(layer, nn.Linear) else \
        out.flatten(2).transpose(1, 2).reshape(-1, weight.shape[0])
    assert torch.allclose(products, expected, atol=1e-5)


@pytest.mark.parametrize("kind", ["linear", "conv_groups"])
def test_the_running_hessian_is_twice_the_mean_outer_product(kind):
    layer = LAYERS[kind]()
    x = _inputs(layer)
    full, diagonal = LayerInputs(layer), LayerInputs(layer, diagonal=True)
    for part in (x[:1], x[1:]):
        full.add(part)
        diagonal.add(part)
    rows = input_rows(layer, x)
    assert full.rows == diagonal.rows == rows.shape[1]
    assert torch.allclose(full.hessian, 2 * rows.transpose(1, 2) @ rows / rows.shape[1], atol=1e-5)
    assert torch.allclose(diagonal.hessian, torch.diagonal(full.hessian, dim1=1, dim2=2), atol=1e-5)
    assert torch.allclose(diagonal.feature_norms(), rows.norm(dim=1), atol=1e-4)


@pytest.mark.parametrize("kind", ["linear", "conv_groups"])
def test_the_cross_statistic_is_twice_the_mean_product_of_reference_and_own_rows(kind):
    layer = LAYERS[kind]()
    x = _inputs(layer)
    reference = x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    inputs = LayerInputs(layer)
    for part in (slice(0, 1), slice(1, 2)):
        inputs.add(x[part], reference[part])
    rows, others = input_rows(layer, x), input_rows(layer, reference)
    assert torch.allclose(inputs.cross, 2 * others.transpose(1, 2) @ rows / rows.shape[1], atol=1e-5)
    with pytest.raises(ConfigError, match="same shapes"):
        inputs.add(x, reference[:1, :2])


def test_the_asymmetric_target_maps_the_changed_inputs_onto_the_original_outputs():
    generator = torch.Generator().manual_seed(0)
    x_ref = torch.randn(400, 6, generator=generator)
    x = x_ref + 0.2 * torch.randn(400, 6, generator=generator)  # what earlier changed layers hand on
    weight = torch.randn(3, 6, generator=generator)
    hessian, cross = 2 * x.t() @ x / 400, 2 * x_ref.t() @ x / 400
    target = asymmetric_target(weight, hessian, cross, damp=0.0)
    expected = torch.linalg.lstsq(x.double(), (x_ref @ weight.t()).double()).solution.t().float()
    assert torch.allclose(target, expected, atol=1e-4)
    assert (x @ target.t() - x_ref @ weight.t()).norm() < (x @ weight.t() - x_ref @ weight.t()).norm()
    assert torch.allclose(asymmetric_target(weight, hessian, hessian, damp=0.01), weight)  # nothing to correct


def test_the_attention_output_projection_is_left_out_and_naming_it_is_one_line():
    model = UserTransformer()
    assert {"embed", "encoder.linear1", "encoder.linear2", "head"} == set(solvable_layers(model))
    with pytest.raises(ConfigError, match="output projection of an nn.MultiheadAttention") as info:
        solvable_layers(model, ("encoder.self_attn.out_proj",))
    assert "\n" not in str(info.value)


def test_a_layer_tied_to_another_module_is_left_out_and_naming_it_is_one_line():
    model = nn.Sequential(nn.Embedding(5, 4), nn.Linear(4, 4), nn.Linear(4, 5, bias=False))
    model[2].weight = model[0].weight
    assert set(solvable_layers(model)) == {"1"}
    prune_(model, MagnitudePrune(sparsity=0.5))  # the same under a mask
    assert set(solvable_layers(model)) == {"1"}
    with pytest.raises(ConfigError, match="layer '2' shares its weight with '0.weight'") as info:
        solvable_layers(model, ("1", "2"))
    assert "\n" not in str(info.value)
