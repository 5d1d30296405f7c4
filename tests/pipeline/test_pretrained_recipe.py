"""A recipe over a pretrained transformer (``[model] pretrained = "hf:PATH"``): its stages are
calibrated on the recipe's text, without training; it runs, resumes, and is refused in one line a
problem when it asks for what a model without labels cannot do."""

import pytest

import netshrink
from netshrink.cli import main
from netshrink.core import get_log
from netshrink.core.errors import ConfigError
from netshrink.pipeline import RecipeError, parse_recipe, run_recipe
from tests.models import HF_MODELS, VOCAB, save_tiny_bert_folder, word_tokenizer

pytest.importorskip("transformers")


def _recipe(folder, text, stages, **data):
    return {"name": "tiny-bert", "model": {"pretrained": f"hf:{folder}"}, "data": {"text": str(text), **data},
            "stages": stages}


STAGES = [{"verb": "sparsegpt", "config": {"pattern": "2:4"}},
          {"verb": "gptq", "config": {"bits": 4, "group_size": 8}}]


def test_stages_are_calibrated_on_the_text_and_the_run_resumes(tmp_path):
    folder, text = save_tiny_bert_folder(tmp_path)
    recipe = parse_recipe(_recipe(folder, text, STAGES, max_length=16))
    lines = []
    report = run_recipe(recipe, tmp_path / "run", log=lines.append)
    assert [row["verb"] for row in report["stages"]] == ["baseline", "sparsegpt", "gptq"]
    assert report["final"]["rate"] > 1.5  # a tiny model: its LayerNorms and biases stay fp32
    encodings = {row["name"]: row["encoding"] for row in report["stages"][-1]["layers"]}
    model = netshrink.load(tmp_path / "run" / "model.nsk", model=HF_MODELS["bert"]())
    assert [r["verb"] for r in get_log(model)] == ["sparsegpt", "finalize", "gptq", "finalize"]
    layers = get_log(model)[2]["layers"]
    for layer in layers:  # 2:4 zeros kept through the 4-bit grid, stored as integers
        assert encodings[f"{layer}.weight"] == "group_int"
        weight = model.get_submodule(layer).weight
        assert int((weight.reshape(-1, 4) != 0).sum(dim=1).max()) <= 2
    again = []
    run_recipe(recipe, tmp_path / "run", log=again.append)
    assert sum("done before (reused)" in line for line in again) == 2


def test_the_command_runs_a_pretrained_recipe_and_checks_it(tmp_path, capsys):
    folder, text = save_tiny_bert_folder(tmp_path)
    path = tmp_path / "r.toml"
    path.write_text(f'name = "t"\n[model]\npretrained = "hf:{folder}"\n[data]\ntext = "{text}"\n'
                    '[[stages]]\nverb = "quantize"\nconfig = { bits = 8, granularity = "channel" }\n')
    assert main(["run", str(path), "--check", "--out", str(tmp_path / "o")]) == 0
    assert main(["run", str(path), "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "model.nsk").is_file()


@pytest.mark.parametrize("change,message", [
    (lambda r: r["stages"][0].update(epochs=2), "stages[0].epochs: a pretrained model's stages do not train"),
    (lambda r: r["stages"].insert(0, {"verb": "train", "epochs": 1}), "stages[0].verb: train trains on labels"),
    (lambda r: r["data"].pop("text"), "data.text: a pretrained model calibrates on text"),
    (lambda r: r["data"].update(text="missing.txt"), "data.text: missing.txt does not exist"),
    (lambda r: r["data"].update(name="digits"), "data.name: unknown key"),
    (lambda r: r["model"].update(pretrained="gpt5"), "model.pretrained: unknown model 'gpt5'"),
    (lambda r: r["model"].update(pretrained="hf:nowhere"), "model.pretrained: nowhere is not a Hugging Face"),
])
def test_what_a_model_without_labels_cannot_do_is_a_recipe_problem(tmp_path, change, message):
    folder, text = save_tiny_bert_folder(tmp_path)
    recipe = _recipe(folder, text, [dict(s) for s in STAGES])
    change(recipe)
    with pytest.raises(RecipeError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_recipe(recipe)


def test_text_of_another_tokenizer_is_refused_before_anything_is_written(tmp_path):
    folder, _ = save_tiny_bert_folder(tmp_path)
    word_tokenizer(4 * VOCAB).save_pretrained(folder)
    (tmp_path / "far.txt").write_text(f"w{4 * VOCAB - 6}\n")
    recipe = parse_recipe(_recipe(folder, tmp_path / "far.txt", STAGES))
    with pytest.raises(ConfigError, match="data.text: the tokenizer gives token id"):
        run_recipe(recipe, tmp_path / "run")
    assert not (tmp_path / "run").exists()
