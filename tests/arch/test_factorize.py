"""The SVD factors: exact at full rank, optimal (Eckart-Young) when truncated, energy ranks."""

import pytest
import torch
from torch import nn

from netshrink.arch.factorize import energy_rank, factor_weights, matricize, singular_values
from netshrink.arch.structure import factored, factored_weights, max_rank


def _conv(kind: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(12, 7) if kind == "linear" else nn.Conv2d(5, 6, (3, 3), **kwargs)


def _input(kind: str) -> torch.Tensor:
    return torch.randn(4, 12) if kind == "linear" else torch.randn(4, 5, 9, 11)


def _converted(module: nn.Module, kind: str, rank: int) -> nn.Module:
    new = factored(module, kind, rank)
    first, second = factor_weights(module.weight, kind, rank)
    with torch.no_grad():
        new[0].weight.copy_(first)
        new[1].weight.copy_(second)
        new[1].bias.copy_(module.bias)
    return new


CONV_SETTINGS = [{}, {"padding": 1}, {"stride": 2, "padding": (2, 1), "dilation": (2, 1)}, {"stride": (1, 2)}]
CASES = [("linear", {})] + [(kind, s) for kind in ("channel", "spatial", "separable") for s in CONV_SETTINGS]


@pytest.mark.parametrize("kind,settings", CASES)
def test_full_rank_factorization_computes_the_same_function(kind, settings):
    module = _conv(kind, **settings)
    x = _input(kind)
    new = _converted(module, kind, max_rank(module, kind))
    torch.testing.assert_close(new(x), module(x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", ["linear", "channel", "spatial", "separable"])
@pytest.mark.parametrize("rank", [1, 2])
def test_truncated_factors_reach_the_eckart_young_error(kind, rank):
    module = _conv(kind)
    new = _converted(module, kind, rank)
    with torch.no_grad():
        product = new[1].weight @ new[0].weight if kind == "linear" else _dense_kernel(new, module)
        error = torch.linalg.norm(matricize(product, kind) - matricize(module.weight, kind))
    dropped = singular_values(module.weight, kind)[..., rank:]
    assert float(error) == pytest.approx(float(dropped.pow(2).sum().sqrt()), rel=1e-4)


def _dense_kernel(new: nn.Module, module: nn.Conv2d) -> torch.Tensor:
    """The k x k kernel the two factor layers compute: their response to unit impulses."""
    ins, (kh, kw) = module.in_channels, module.kernel_size
    impulses = torch.zeros(ins * kh * kw, ins, kh, kw)
    for index, (c, y, x) in enumerate((c, y, x) for c in range(ins) for y in range(kh) for x in range(kw)):
        impulses[index, c, y, x] = 1.0
    with torch.no_grad():
        response = new[1](new[0](impulses)) - (new[1].bias.view(1, -1, 1, 1) if new[1].bias is not None else 0)
    # a valid conv of a k x k impulse gives one output: W[o, c, y, x]
    return response.reshape(ins, kh, kw, -1).permute(3, 0, 1, 2)


@pytest.mark.parametrize("kind,rank", [("linear", 3), ("channel", 2), ("spatial", 4), ("separable", 2)])
def test_factored_layers_have_the_stated_weight_count(kind, rank):
    module = _conv(kind)
    new = factored(module, kind, rank)
    assert new[0].weight.numel() + new[1].weight.numel() == factored_weights(module, kind, rank)
    assert new[0].bias is None and (new[1].bias is not None) == (module.bias is not None)


def test_separable_weight_count_is_m_k2_i_plus_m_i_o():
    conv = nn.Conv2d(16, 32, 3)
    for m in (1, 2, 3):
        assert factored_weights(conv, "separable", m) == m * 9 * 16 + m * 16 * 32


def test_energy_rank_is_the_least_rank_keeping_the_energy():
    values = torch.tensor([3.0, 2.0, 1.0, 0.0])  # energies 9, 4, 1 of 14
    assert energy_rank(values, 9 / 14) == 1
    assert energy_rank(values, 9 / 14 + 1e-6) == 2
    assert energy_rank(values, 13 / 14) == 2
    assert energy_rank(values, 1.0) == 3
    assert energy_rank(torch.ones(5), 1.0) == 5
