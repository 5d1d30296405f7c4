"""auto on a Hugging Face text encoder (a tiny BERT folder, ``hf:PATH``): a size budget met with
fidelity to the original (cosine of sentence embeddings on validation passages), recipes that
`netshrink run` reproduces, only calibration and validation text read, one line for bad input."""

import json

import pytest
import torch

import netshrink.data.text as text_data
from netshrink.autocompress import TEXT_SCHEDULE, Budget, TextSpace, auto
from netshrink.autocompress.choices import KEEP, Choice
from netshrink.autocompress.text import TextTask, cosine, embeddings, layer_group
from netshrink.cli import main
from netshrink.codec.container import load
from netshrink.core.errors import ConfigError
from netshrink.data import read_text
from netshrink.models.pretrained import load_pretrained
from netshrink.pipeline import load_recipe, run_recipe
from tests.models import save_tiny_bert_folder

pytest.importorskip("transformers")
BUDGET = Budget(max_bytes="2x", max_drop=5.0, time_limit="10m")


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    """``(hf:PATH, text file)`` of a tiny BERT and 40 passages of its words."""
    folder, text = save_tiny_bert_folder(tmp_path_factory.mktemp("bert"), lines=40)
    return f"hf:{folder}", text


@pytest.fixture(scope="module")
def searched(bert, tmp_path_factory):
    """``(OUT, result, files read)`` of one search: three points, the text split by auto."""
    spec, text = bert
    out = tmp_path_factory.mktemp("auto-text")
    read, original = [], text_data.read_text

    def spy(source, *args, **kwargs):
        read.append(str(source))
        return original(source, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(text_data, "read_text", spy)
        result = auto(spec, str(text), BUDGET, out, schedule=TEXT_SCHEDULE[:3], log=lambda line: None)
    return out, result, read


def test_a_search_meets_a_loose_size_budget_by_fidelity(bert, searched):
    out, result, _ = searched
    assert result.met and result.chosen["file_bytes"] <= result.limit
    assert result.limit == result.original["dense_fp32_bytes"] / 2
    pretrained = load_pretrained(bert[0])
    validation = read_text(out / "text" / "validation.txt", pretrained.tokenizer)
    chosen = load(result.chosen["model_file"], model=pretrained.model).eval()
    fidelity = cosine(embeddings(load_pretrained(bert[0]).model.eval(), validation), embeddings(chosen, validation))
    assert result.chosen["val_accuracy"] == pytest.approx(fidelity, abs=1e-5)
    assert result.chosen["drop"] == pytest.approx(100 * (1 - fidelity), abs=1e-3)
    settings = {Choice.from_dict(c) for c in result.chosen["allocation"].values()}
    assert settings - {KEEP} and all(c.values == "int" for c in settings - {KEEP})


def test_only_calibration_and_validation_passages_are_read(bert, searched):
    out, result, read = searched
    calibration, validation = (out / "text" / name for name in ("calibration.txt", "validation.txt"))
    assert set(read) == {str(calibration), str(validation)}
    held, kept = validation.read_text().splitlines(), calibration.read_text().splitlines()
    assert not set(held) & set(kept) and sorted(held + kept) == sorted(bert[1].read_text().splitlines())
    recipe = load_recipe(result.chosen["recipe_file"])
    assert recipe.data["text"] == str(calibration)


def test_the_chosen_recipe_reproduces_through_run_recipe(bert, searched, tmp_path):
    _, result, _ = searched
    report = run_recipe(load_recipe(result.chosen["recipe_file"]), tmp_path, log=lambda line: None)
    assert report["final"]["file_bytes"] == result.chosen["file_bytes"]
    again = load(report["final"]["file"], model=load_pretrained(bert[0]).model).state_dict()
    kept = load(result.chosen["model_file"], model=load_pretrained(bert[0]).model).state_dict()
    assert all(torch.equal(again[name], kept[name]) for name in kept)
    stored = json.loads((result.out / "result.json").read_text())
    assert stored["chosen"] == result.chosen["index"] and stored["original"]["val_accuracy"] == 1.0


def test_stages_quantize_embeddings_and_gptq_on_groups_that_divide():
    from torch import nn

    modules = {"embed": nn.Embedding(10, 48), "a": nn.Linear(48, 16), "b": nn.Linear(96, 16), "c": nn.Linear(16, 4)}
    task = TextTask(TextSpace(group_size=64), modules, {})
    g4, g3 = TextSpace(group_size=64).choice(4), TextSpace(group_size=64).choice(3)
    stages = task.stages({"embed": g4, "a": g4, "b": g4, "c": Choice(values="int", bits=8)})
    assert [s["verb"] for s in stages] == ["quantize", "quantize", "gptq", "gptq"]
    assert stages[0]["config"] == {"bits": {"embed": 4}, "scheme": "affine", "calibration": "mse",
                                   "granularity": "group", "group_size": 16}
    assert stages[1]["config"] == {"bits": {"c": 8}, "granularity": "channel"}
    assert {(s["config"]["group_size"], tuple(s["config"]["layers"])) for s in stages[2:]} == {(16, ("a",)),
                                                                                              (32, ("b",))}
    assert layer_group(384, 128) == 128 and layer_group(48, 128) == 16
    assert not task.applies("embed", g3) and task.applies("a", g3)
    assert task.stages({"a": KEEP})[0]["verb"] == "magnitude_prune"


@pytest.mark.parametrize(("data", "budget", "message"), [
    ({"text": "missing.txt"}, BUDGET, "no text file or folder"),
    ({"text": "T", "labels": 1}, BUDGET, "unknown text data key"),
    ("T", Budget(max_macs="2x", time_limit="10m"), "takes a max_bytes budget"),
    ("T", Budget(max_bytes=100, time_limit="10m"), "max_bytes of 100 bytes is impossible"),
])
def test_bad_text_input_is_one_line(bert, tmp_path, data, budget, message):
    spec, text = bert
    data = str(text) if data == "T" else {k: str(text) if v == "T" else v for k, v in data.items()}
    with pytest.raises(ConfigError, match=message) as error:
        auto(spec, data, budget, tmp_path / "out", log=lambda line: None)
    assert "\n" not in str(error.value) and not (tmp_path / "out").exists()


def _cli(*flags):
    return main(["auto", *flags])


@pytest.mark.parametrize(("flags", "message"), [
    (["--text", "T", "--max-bytes", "2x"], "--text is for text encoders"),
    (["--model", "M", "--max-bytes", "2x"], "needs --text FILE"),
    (["--model", "bert-base", "--text", "T", "--max-bytes", "2x"], "--model 'bert-base': give a text encoder"),
    (["--model", "smollm2", "--text", "T", "--max-bytes", "2x"], "smollm2 is a language model"),
    (["--model", "M", "--text", "T", "--max-latency-ms", "2x"], "takes a --max-bytes budget"),
    (["model.nsk", "--model", "M", "--text", "T", "--max-bytes", "2x"], "not both"),
    ([], "give MODEL"),
])
def test_bad_text_flags_are_one_line_naming_the_flag(bert, tmp_path, capsys, flags, message):
    spec, text = bert
    flags = [spec if f == "M" else str(text) if f == "T" else f for f in flags]
    assert _cli(*flags, "--out", str(tmp_path / "out")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("netshrink: error: ") and message in err and "\n" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_text_search_from_the_command_line(bert, tmp_path, capsys):
    spec, text = bert
    assert _cli("--model", spec, "--text", str(text), "--max-bytes", "2x", "--max-drop", "5", "--time", "10m",
                "--points", "2", "--out", str(tmp_path)) == 0
    assert "chosen: point" in capsys.readouterr().out
    for name in ("model.nsk", "recipe.toml", "report.html", "result.json"):
        assert (tmp_path / name).is_file()
    assert main(["run", str(tmp_path / "recipe.toml"), "--out", str(tmp_path / "check")]) == 0
    assert (tmp_path / "check" / "model.nsk").read_bytes() == (tmp_path / "model.nsk").read_bytes()
