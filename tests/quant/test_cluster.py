"""Weight clustering: shared values, pruned zeros kept, centroid fine-tuning (Deep Compression 3.3)."""

import pytest
import torch
from torch.nn.utils import parametrize

from netshrink.core import finalize_
from netshrink.core.errors import ConfigError
from netshrink.core.transform_log import get_log
from netshrink.quant import Cluster, SharedWeights, centroids, cluster_
from netshrink.train import FitConfig, fit
from tests.models import NUM_CLASSES, TINY_MODELS
from tests.quant.helpers import TokenClassifier, distinct, round_trip, weight_tensors


@pytest.mark.parametrize("init", ["linear", "density", "random", "optimal"])
@pytest.mark.parametrize("bits", [2, 4])
def test_each_layer_holds_at_most_2_to_the_bits_values(tiny_model, init, bits):
    cluster_(tiny_model, Cluster(bits=bits, init=init))
    finalize_(tiny_model)
    for name, weight in weight_tensors(tiny_model).items():
        assert distinct(weight) <= 2**bits, name


def test_pruned_zeros_stay_zero_and_out_of_the_codebook():
    torch.manual_seed(0)
    model = TINY_MODELS["lenet300_100"]()
    with torch.no_grad():
        weight = model.fc1.weight
        weight[weight.abs() < weight.abs().median()] = 0.0  # half pruned
    zeros = model.fc1.weight == 0
    cluster_(model, Cluster(bits=2, init="density"))
    sharing = model.fc1.parametrizations.weight[0]
    assert sharing.centroids.numel() == 3  # zero takes the fourth entry
    assert bool((sharing.centroids != 0).all())
    finalize_(model)
    assert torch.equal(model.fc1.weight == 0, zeros)
    assert distinct(model.fc1.weight) == 4


def test_centroid_gradient_is_the_sum_of_its_members_gradients():
    torch.manual_seed(0)
    model = TINY_MODELS["user_mlp"]()
    cluster_(model, Cluster(bits=3))
    layer = model.body[1]
    sharing = layer.parametrizations.weight[0]
    x = torch.randn(16, 1, 8, 8)
    weight = layer.weight  # the tied weights, a non-leaf computed from the centroids
    weight.retain_grad()
    torch.nn.functional.linear(torch.randn(16, 64), weight).pow(2).sum().backward()
    expected = torch.zeros_like(sharing.centroids).index_add_(0, sharing.index.flatten(), weight.grad.flatten())
    assert torch.allclose(sharing.centroids.grad, expected)
    del x


@pytest.mark.slow
def test_fine_tuning_through_fit_moves_centroids_and_keeps_weights_tied(digits, tmp_path):
    torch.manual_seed(0)
    model = TINY_MODELS["lenet300_100"]()
    cluster_(model, Cluster(bits=3))
    before = {k: v.clone() for k, v in centroids(model).items()}
    fit(model, digits, FitConfig(epochs=1, batch_size=64, lr=0.01), out_dir=tmp_path, progress=False)
    after = centroids(model)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    for name, weight in weight_tensors(model).items():
        assert distinct(weight) <= 8, name


def test_fine_tuning_in_a_users_own_loop(digits):
    torch.manual_seed(0)
    model = TINY_MODELS["convnet"]()
    cluster_(model, Cluster(bits=2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = digits.train.x[:128], digits.train.y[:128]
    losses = []
    for _ in range(8):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    for name, weight in weight_tensors(model).items():
        assert distinct(weight) <= 4, name


def test_finalize_bakes_the_current_shared_values(tiny_model):
    cluster_(tiny_model, Cluster(bits=3))
    tiny_model.eval()
    x = torch.randn(5, 1, 8, 8)
    expected = tiny_model(x)
    finalize_(tiny_model)
    assert not any(isinstance(m, SharedWeights) for m in tiny_model.modules())
    assert torch.equal(tiny_model(x), expected)


def test_embedding_layers_are_clustered(tmp_path):
    torch.manual_seed(0)
    model = TokenClassifier()
    cluster_(model, Cluster(bits=2, filter_fn=lambda m, n: isinstance(m, torch.nn.Embedding)))
    finalize_(model)
    assert distinct(model.embed.weight) <= 4
    assert distinct(model.hidden.weight) > 4  # filter_fn left it alone
    loaded, _ = round_trip(model, TokenClassifier(), tmp_path / "tokens.nsk")
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(loaded(x), model.eval()(x))


def test_mixed_bits_by_layer_name():
    torch.manual_seed(0)
    model = TINY_MODELS["lenet5"]()
    layers = list(weight_tensors(model))
    cluster_(model, Cluster(bits={layers[0]: 1, layers[-1]: 3}))
    finalize_(model)
    weights = weight_tensors(model)
    assert distinct(weights[layers[0]]) <= 2 and distinct(weights[layers[-1]]) <= 8
    assert distinct(weights[layers[1]]) > 8  # not named, not clustered


def test_saved_file_shrinks_with_the_bits(tmp_path):
    sizes = {}
    for bits in (2, 4, 6):
        torch.manual_seed(0)
        model = TINY_MODELS["lenet300_100"]()
        cluster_(model, Cluster(bits=bits))
        finalize_(model)
        _, sizes[bits] = round_trip(model, None, tmp_path / f"c{bits}.nsk")
    torch.manual_seed(0)
    dense = TINY_MODELS["lenet300_100"]()
    n_weights = sum(w.numel() for w in weight_tensors(dense).values())
    biases = sum(p.numel() for n, p in dense.named_parameters() if n.endswith("bias"))
    for bits, size in sizes.items():
        # b bits per weight before entropy coding, plus fp32 biases and codebooks; 2 KB of header
        assert size <= n_weights * bits / 8 + (biases + 3 * 2**bits) * 4 + 2048, (bits, size)
    assert sizes[2] < sizes[4] < sizes[6]


def test_bad_input_is_one_line():
    torch.manual_seed(0)
    model = TINY_MODELS["user_mlp"]()
    with pytest.raises(ConfigError, match="from 1 to 8"):
        Cluster(bits=9)
    with pytest.raises(ConfigError, match="unknown init"):
        Cluster(init="kmeans++")
    with torch.no_grad():
        model.body[1].weight[0, 0] = float("nan")
    with pytest.raises(ConfigError, match="NaN or infinite"):
        cluster_(model, Cluster(bits=2))
    with pytest.raises(ConfigError, match="unknown layer name"):
        cluster_(model, Cluster(bits={"nope": 2}))


def test_a_layer_with_few_distinct_values_keeps_them_exactly_and_an_empty_layer_stays_zero():
    torch.manual_seed(0)
    model = TINY_MODELS["user_mlp"]()
    with torch.no_grad():  # 0.001 and 0.002 would share a centroid under k-means from a linear grid
        model.head.weight.copy_(torch.tensor([0.001, 0.002, 1.0, 0.0]).repeat(6 * NUM_CLASSES).reshape_as(
            model.head.weight))
        model.body[1].weight.zero_()  # pruned away entirely
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cluster_(model, Cluster(bits=2, init="linear"))
    details = get_log(model)[-1]["layers"]
    assert details["head"]["clusters"] == 3 and details["head"]["squared_error"] == 0.0
    assert details["body.1"]["clusters"] == 0
    assert torch.equal(model.head.weight, before["head.weight"])
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.01)
    for _ in range(3):  # the emptied layer stays zero under training
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(torch.randn(16, 1, 8, 8)), torch.randint(0, 10, (16,))).backward()
        optimizer.step()
    finalize_(model)
    assert not parametrize.is_parametrized(model.body[1])
    assert int(torch.count_nonzero(model.body[1].weight)) == 0
