"""Recipe validation: shipped recipes are valid; every problem of a bad one is reported at once."""

from pathlib import Path

import pytest

from netshrink.cli import main
from netshrink.pipeline import RecipeError, load_recipe, parse_recipe, stage_verbs

RECIPES = sorted((Path(__file__).parents[2] / "recipes").glob("*.toml"))
GOOD = {"model": {"zoo": "lenet300_100"}, "data": {"name": "digits"},
        "stages": [{"verb": "prune", "config": {"sparsity": 0.5}, "epochs": 1}]}


def test_recipes_are_shipped():
    names = {p.stem for p in RECIPES}
    assert {"deep_compression_lenet300_100", "deep_compression_lenet5"} <= names
    assert len(RECIPES) >= 6


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_every_shipped_recipe_validates(path):
    recipe = load_recipe(path)
    assert recipe.stages and all(stage.verb in stage_verbs() for stage in recipe.stages)


def test_configs_are_built_from_toml_tables():
    recipe = parse_recipe({**GOOD, "stages": [
        {"verb": "prune", "config": {"sparsity": {"fc1": 0.9}}, "epochs": 2, "fit": {"lr": 0.01}},
        {"verb": "early_exit", "config": {"after": ["fc1"]}}]})
    prune, exits = recipe.stages
    assert prune.config.sparsity == {"fc1": 0.9} and prune.fit.lr == 0.01 and prune.epochs == 2
    assert exits.config.after == ("fc1",) and exits.epochs == 0


def test_all_problems_are_reported_together_with_their_place(tmp_path):
    bad = {
        "colour": "red",
        "model": {"zoo": "no_such_model"},
        "data": {"name": "digits", "val_fraction": 2.0},
        "stages": [
            {"verb": "squash"},
            {"verb": "prune", "config": {"sparsity": 1.5, "bogus": 1}, "epochs": -1},
            {"verb": "cluster", "config": {"bits": 4}, "epochs": 1, "teacher": str(tmp_path / "gone.safetensors")},
            {"verb": "quantize", "config": {"bits": 99}, "fit": {"optimizer": "nope"}, "epochs": 1},
        ],
    }
    with pytest.raises(RecipeError) as caught:
        parse_recipe(bad)
    lines = str(caught.value).splitlines()[1:]
    places = ["colour:", "model.zoo:", "data.val_fraction:", "stages[0].verb:", "stages[1].config.bogus:",
              "stages[1].epochs:", "stages[2].teacher:", "stages[3].config:", "stages[3].fit:"]
    for place in places:
        assert any(line.strip().startswith(place) for line in lines), (place, lines)
    assert len(lines) == len(places)


def test_impossible_values_use_the_configs_own_checks():
    with pytest.raises(RecipeError, match=r"stages\[0\]\.config: .*sparsity"):
        parse_recipe({**GOOD, "stages": [{"verb": "prune", "config": {"sparsity": 1.5}}]})


def test_structural_change_after_a_dynamic_stage_is_refused():
    stages = [{"verb": "slimmable", "epochs": 1}, {"verb": "separable", "epochs": 1}]
    with pytest.raises(RecipeError, match=r"stages\[1\]\.verb: separable after slimmable"):
        parse_recipe({**GOOD, "stages": stages})


@pytest.mark.parametrize("stage, place", [
    ({"verb": "distill", "epochs": 1}, r"stages\[0\]\.teacher"),
    ({"verb": "train"}, r"stages\[0\]\.epochs"),
    ({"verb": "slimmable", "teacher": "baseline", "epochs": 1}, r"stages\[0\]\.teacher"),
    ({"verb": "prune", "max_drop": 0.01}, r"stages\[0\]\.max_drop"),
])
def test_training_options_are_checked(stage, place):
    with pytest.raises(RecipeError, match=place):
        parse_recipe({**GOOD, "stages": [stage]})


def test_model_needs_exactly_one_source_and_an_importable_builder():
    with pytest.raises(RecipeError, match="exactly one of zoo, checkpoint, builder"):
        parse_recipe({**GOOD, "model": {"zoo": "lenet5", "builder": "a.b:c"}})
    with pytest.raises(RecipeError, match=r"model\.builder: cannot import"):
        parse_recipe({**GOOD, "model": {"builder": "no_such_package.models:build"}})


def test_cli_check_reports_problems_in_lines(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text('[model]\nzoo = "lenet5"\n[data]\nname = "digits"\n[[stages]]\nverb = "prune"\nepochs = "two"\n')
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--check"]) == 2
    err = capsys.readouterr().err
    assert "stages[0].epochs: must be an integer" in err
    assert not (tmp_path / "out").exists()


def test_broken_toml_is_one_line(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[model\n")
    with pytest.raises(RecipeError, match="not valid TOML") as caught:
        load_recipe(path)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(("stage", "expected"), [
    ({"verbb": "prune", "config": {"sparsity": 0.5}}, "stages[0].verbb: unknown key; did you mean verb?"),
    ({"verb": "distill", "teachr": "baseline", "epochs": 1}, "stages[0].teachr: unknown key; did you mean teacher?"),
    ({"verb": "prunee", "config": {"sparsity": 0.5}}, "stages[0].verb: unknown verb 'prunee'; did you mean prune?"),
    ({"verb": "prune", "max_drop": 0.01}, "stages[0].max_drop: magnitude_prune stages do not read it; only "
                                          "early_exit stages do"),
])
def test_one_mistake_is_one_problem_naming_what_was_meant(stage, expected):
    with pytest.raises(RecipeError) as refused:
        parse_recipe({**GOOD, "stages": [stage]})
    assert str(refused.value).splitlines()[1:] == [f"  {expected}"]


def test_finalize_is_not_a_stage():
    with pytest.raises(RecipeError, match="unknown verb 'finalize'"):
        parse_recipe({**GOOD, "stages": [{"verb": "finalize"}]})
