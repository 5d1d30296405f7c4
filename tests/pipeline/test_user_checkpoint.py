"""A recipe's model may be a user's class (builder) filled from a checkpoint (.safetensors or .nsk)."""

import pytest
import torch

from netshrink.codec.container import save
from netshrink.pipeline import RecipeError, parse_recipe
from netshrink.pipeline.run import build_model
from netshrink.train import save_model
from tests.models import UserMLP


@pytest.mark.parametrize("suffix", [".safetensors", ".nsk"])
def test_builder_with_checkpoint_builds_the_class_with_its_weights(tmp_path, digits, suffix):
    torch.manual_seed(1)
    trained = UserMLP()
    path = tmp_path / f"mlp{suffix}"
    (save_model(path, trained) if suffix == ".safetensors" else save(trained, path))
    recipe = parse_recipe({"model": {"builder": "tests.models:UserMLP", "checkpoint": str(path)},
                           "data": {"name": "digits"}, "stages": [{"verb": "prune", "config": {"sparsity": 0.5}}]})
    built = build_model(recipe, digits)
    assert type(built) is UserMLP
    assert all(torch.equal(a, b) for a, b in zip(built.state_dict().values(), trained.state_dict().values(),
                                                 strict=True))


def test_a_zoo_name_with_a_checkpoint_is_still_refused():
    with pytest.raises(RecipeError, match="give exactly one of zoo, checkpoint, builder, pretrained, or builder "
                                          "with checkpoint"):
        parse_recipe({"model": {"zoo": "lenet5", "checkpoint": "x.nsk"}, "data": {"name": "digits"},
                      "stages": [{"verb": "prune", "config": {"sparsity": 0.5}}]})
