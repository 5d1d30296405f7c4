"""Allocations as recipe stages: order, per-layer dicts, TOML that tomllib reads back equal."""

import tomllib

from netshrink.autocompress.choices import KEEP, Choice
from netshrink.autocompress.plan import NO_TRAINING, Recovery, recipe_for, stages_for, to_toml
from netshrink.pipeline import parse_recipe

ALLOCATION = {"fc1": Choice(0.9, "cluster", 4), "fc2": Choice(0.5, "int", 6), "fc3": Choice(0.0, "cluster", 8),
              "conv": Choice(amount=0.5), "head": KEEP}


def test_stages_follow_the_recipe_order_and_every_valued_layer_ends_clustered():
    stages = stages_for(ALLOCATION, Recovery(epochs=3, cluster_epochs=2))
    assert [s["verb"] for s in stages] == ["structured_prune", "magnitude_prune", "quantize", "cluster"]
    assert stages[0]["config"] == {"amount": 0.5, "layers": ["conv"]} and stages[0]["epochs"] == 0
    assert stages[1]["config"] == {"sparsity": {"fc1": 0.9, "fc2": 0.5}}
    assert stages[1]["epochs"] == 3 and stages[1]["teacher"] == "baseline"  # recovery under the masks
    assert stages[2] == {"verb": "quantize", "config": {"bits": {"fc2": 6}}, "epochs": 0}
    assert stages[3]["config"]["bits"] == {"fc1": 4, "fc2": 6, "fc3": 8} and stages[3]["epochs"] == 2
    untrained = stages_for(ALLOCATION, NO_TRAINING)
    assert all(s["epochs"] == 0 and "teacher" not in s for s in untrained)
    assert "teacher" not in stages_for(ALLOCATION, Recovery(distill=False))[1]


def test_keeping_every_layer_is_still_a_recipe():
    stages = stages_for({"fc1": KEEP}, Recovery())
    assert stages == [{"verb": "magnitude_prune", "config": {"sparsity": 0.0}, "epochs": 0}]


def test_toml_reads_back_equal_and_parses_as_a_recipe(tmp_path):
    recipe = recipe_for("auto-point-001", {"zoo": "lenet300_100"}, {"name": "digits", "val_fraction": 0.1},
                        stages_for({"body.1": Choice(0.9, "cluster", 4), "fc2": KEEP}, Recovery()))
    text = to_toml(recipe, "a comment\nover two lines")
    assert tomllib.loads(text) == recipe
    assert parse_recipe(tomllib.loads(text)).stages[0].config.sparsity == {"body.1": 0.9}
