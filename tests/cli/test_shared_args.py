"""The option groups commands share: one flag per concept, one default per concept, messages in
flags, ``--debug`` anywhere, and a CLI package nothing else imports."""

import ast
import dataclasses
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from netshrink.cli import args as shared
from netshrink.cli import build_parser, main

NETSHRINK = Path(__file__).parents[2] / "netshrink"
TRAINING_FLAGS = {"--epochs": "epochs", "--batch-size": "batch_size", "--lr": "lr", "--optimizer": "optimizer",
                  "--weight-decay": "weight_decay", "--augment": "augment", "--seed": "seed", "--device": "device"}
#: command -> the defaults its training flags must have
FITTING = {"train": shared.TRAINING, "distill": shared.TRAINING, "prune": shared.FINE_TUNING,
           "quantize": shared.FINE_TUNING, "convert": shared.FINE_TUNING, "dynamic": shared.FINE_TUNING}
#: the least each command needs to reach its checks (nothing here is read before they fail)
MINIMAL = {"train": ["--model", "lenet5"], "distill": ["--teacher", "t.safetensors", "--student", "lenet5"],
           "prune": ["m.safetensors", "--sparsity", "0.5"], "quantize": ["m.safetensors"],
           "convert": ["m.safetensors", "--to", "separable"], "dynamic": ["m.safetensors", "--exits", "a"],
           "demo": []}


def _defaults(command: str) -> dict[str, object]:
    parser = build_parser()._subparsers._group_actions[0].choices[command]
    return {option: (action.default, action.required) for action in parser._actions
            for option in action.option_strings}


@pytest.mark.parametrize("command", sorted(FITTING))
def test_every_command_that_trains_has_the_training_flags_with_its_kinds_defaults(command):
    declared = _defaults(command)
    expected = {**FITTING[command], "augment": False}
    for option, field in TRAINING_FLAGS.items():
        default, required = declared[option]
        if command == "dynamic" and option == "--epochs":
            assert required  # the exits or widths it adds must train
        else:
            assert (default, required) == (expected[field], False), option
    assert ("--resume" in declared) == (command in {"train", "distill", "quantize"})
    assert declared["--out"][1] and declared["--data-dir"][0] is None and declared["--val-fraction"][0] == 0.1
    assert declared["--data"][0] == (None if command == "quantize" else "fashion-mnist")


def test_no_command_keeps_an_old_spelling():
    parser = build_parser()
    for command in parser._subparsers._group_actions[0].choices:
        assert not {"--finetune-epochs", "--qat-epochs"} & set(_defaults(command))


def test_the_copied_defaults_and_choices_match_the_library():
    from netshrink.data import load_dataset
    from netshrink.dynamic.early_exit import HEADS
    from netshrink.train import FitConfig
    from netshrink.train.config import OPTIMIZERS, SCHEDULES

    fit = FitConfig()
    assert {k: v for k, v in shared.TRAINING.items() if k != "device"} == {k: getattr(fit, k) for k in shared.TRAINING
                                                                          if k != "device"}
    assert set(shared.FIT_FIELDS) <= {f.name for f in dataclasses.fields(FitConfig)}
    assert shared.OPTIMIZERS == OPTIMIZERS
    assert shared.VAL_FRACTION == inspect.signature(load_dataset).parameters["val_fraction"].default
    subcommands = build_parser()._subparsers._group_actions[0].choices
    choices = {a.dest: tuple(a.choices) for name in ("train", "dynamic") for a in subcommands[name]._actions
               if a.choices}
    assert choices["schedule"] == SCHEDULES and choices["head"] == HEADS


@pytest.mark.parametrize("command", sorted(MINIMAL))
def test_a_bad_epoch_count_is_one_line_naming_the_flag(command, tmp_path, capsys):
    out = tmp_path / "out"
    assert main([command, *MINIMAL[command], "--data", "digits", "--epochs", "-1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("netshrink: error: --epochs must be ") and err.endswith("got -1\n")
    assert err.count("\n") == 1 and "FitConfig" not in err
    assert not out.exists()


@pytest.mark.parametrize("option,message", [(["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
                                            (["--weight-decay", "-1"], "--weight-decay must be >= 0, got -1.0"),
                                            (["--device", "nowhere"], "--device 'nowhere' is not a device"),
                                            (["--val-fraction", "1"], "--val-fraction must be in [0, 1), got 1.0")])
def test_the_shared_flags_are_checked_in_their_own_terms(option, message, tmp_path, capsys):
    argv = ["train", "--model", "lenet300_100", "--data", "digits", "--out", str(tmp_path / "out"), *option]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_debug_works_before_or_after_the_command():
    from netshrink.core.errors import ConfigError

    parser = build_parser()
    assert parser.parse_args(["models"]).debug is False
    assert parser.parse_args(["--debug", "models"]).debug is True  # not reset by the command's own --debug
    assert parser.parse_args(["models", "--debug"]).debug is True
    with pytest.raises(ConfigError):
        main(["eval", "missing.nsk", "--data", "digits", "--debug"])


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) of every import in ``path``, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, [alias.name for alias in node.names]))
    return found


def test_no_other_package_imports_the_cli():
    for path in NETSHRINK.rglob("*.py"):
        if "cli" in path.relative_to(NETSHRINK).parts:
            continue
        for module, names in _imports(path):
            assert not module.startswith("netshrink.cli") and not (module == "netshrink" and "cli" in names), path


def test_cli_modules_share_no_private_helper_and_import_no_cycle():
    modules = {p.stem: p for p in (NETSHRINK / "cli").glob("*.py") if p.stem not in {"__init__", "__main__"}}
    graph = {}
    for name, path in modules.items():
        graph[name] = set()
        for module, names in _imports(path):
            if module.startswith("netshrink.cli."):
                assert not any(n.startswith("_") for n in names), (path, module, names)
                graph[name].add(module.rsplit(".", 1)[1])
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import cycle {path + (name,)}"
        if name not in done:
            for child in graph[name]:
                visit(child, path + (name,))
            done.add(name)

    for name in graph:
        visit(name, ())


def test_building_the_parser_imports_no_torch():
    script = "import sys, netshrink.cli as c; c.build_parser(); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
