"""The help text: whole descriptions, every default shown, examples that parse."""

import argparse
import dataclasses
import shlex
from pathlib import Path

import pytest

from netshrink.cli import DESCRIPTION, EPILOG, build_parser, main
from netshrink.cli.help_format import HelpFormatter
from netshrink.train import FitConfig


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    return build_parser()._subparsers._group_actions[0].choices


def _help(argv, capsys) -> str:
    with pytest.raises(SystemExit) as info:
        main([*argv, "--help"])
    assert info.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # wrapping removed


def test_top_level_help_shows_the_whole_description_and_examples(capsys):
    text = _help([], capsys)
    assert " ".join(DESCRIPTION.split()) in text and DESCRIPTION.endswith(".")
    assert "--debug shows the traceback." in text
    for command in _subparsers():
        assert f" {command} " in text


def test_every_example_in_the_help_parses():
    examples = [line.split("#")[0].split() for line in EPILOG.splitlines() if line.startswith("  netshrink ")]
    assert len(examples) >= 4
    for words in examples:
        args = build_parser().parse_args(words[1:])
        assert args.command == words[1]


@pytest.mark.parametrize("command", sorted(_subparsers()))
def test_every_option_with_a_default_shows_it(command, capsys):
    text = _help([command], capsys)
    options = [a for a in _subparsers()[command]._actions if a.option_strings and a.help != argparse.SUPPRESS]
    assert all(a.help for a in options), [a.dest for a in options if not a.help]
    for action in options:
        if HelpFormatter.has_default(action) and action.dest != "help":
            assert f"(default: {action.default})" in text, action.dest


def test_train_help_shows_the_training_defaults(capsys):
    text = _help(["train"], capsys)
    for shown in ("--epochs EPOCHS passes over the training split (default: 10)",
                  "(default: 128)", "--lr LR peak learning rate (default: 0.05)",
                  "weight decay (default: 0.0005)", "--optimizer {sgd,adam,adamw} optimizer (default: sgd)"):
        assert shown in text


def test_train_defaults_are_fit_configs():
    args = build_parser().parse_args(shlex.split("train --model lenet5 --out x"))
    shared = [f.name for f in dataclasses.fields(FitConfig) if hasattr(args, f.name)]
    assert {"epochs", "batch_size", "lr", "weight_decay", "optimizer", "momentum", "schedule"} <= set(shared)
    for name in shared:
        assert getattr(args, name) == getattr(FitConfig(), name), name


def test_every_command_line_in_the_readme_parses():
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    lines = [line.split("#")[0].split() for line in readme.splitlines()
             if line.startswith(".venv/bin/netshrink ") and "..." not in line and "--help" not in line]
    assert len(lines) >= 4
    for words in lines:
        assert build_parser().parse_args(words[1:]).command == words[1]
