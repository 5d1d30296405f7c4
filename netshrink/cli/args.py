"""The option groups commands share, as argparse parent parsers (``parents=[...]``), and their checks.

One concept has one flag everywhere, declared here once:

- data: ``--data``, ``--data-dir`` and, where the command uses a validation split, ``--val-fraction``;
- training: ``--epochs --batch-size --lr --optimizer --weight-decay --augment --seed --device`` with
  the defaults of ``TRAINING`` (``train``, ``distill``: ``FitConfig``'s) or of ``FINE_TUNING``
  (``prune``, ``quantize``, ``convert``, ``dynamic``: a trained model tuned after compressing it);
- ``--resume`` and ``--no-progress`` where the training keeps its checkpoint in ``--out``;
- output: ``--out``;
- ``--debug``, which every command takes, before or after its name.

Each group is a new parser for every command: argparse gives a child its parent's action objects,
so one instance shared by two commands would share any later change to them. ``fit_config`` and
``load_data`` check the groups' values and speak in flags (``--epochs``, not ``FitConfig.epochs``).
Nothing here imports torch while the parser is built, so ``netshrink --help`` stays fast.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from netshrink.cli.help_format import HelpFormatter

if TYPE_CHECKING:
    from netshrink.data import Dataset
    from netshrink.train import FitConfig

#: the file every compressing command writes into ``--out``
OUTPUT_NAME = "model.nsk"
#: ``netshrink.train.config.OPTIMIZERS``, copied because importing it imports torch (a test keeps them equal)
OPTIMIZERS = ("sgd", "adam", "adamw")
#: ``load_dataset``'s default validation share (a test keeps them equal)
VAL_FRACTION = 0.1
DEBUG_HELP = "show tracebacks on errors"

#: training a model: ``FitConfig``'s defaults (a test keeps them equal)
TRAINING: dict[str, Any] = {"epochs": 10, "batch_size": 128, "lr": 0.05, "optimizer": "sgd",
                            "weight_decay": 5e-4, "seed": 0, "device": "cpu"}
#: fine-tuning a trained model after compressing it: none unless asked, at a fifth of the learning rate
FINE_TUNING: dict[str, Any] = {**TRAINING, "epochs": 0, "lr": 0.01}
#: the ``FitConfig`` fields the training flags set (``--device`` is ``fit``'s argument)
FIT_FIELDS = ("epochs", "batch_size", "lr", "optimizer", "weight_decay", "augment", "seed")
#: ``--epochs``' help in each
TRAINING_EPOCHS_HELP = "passes over the training split"
FINE_TUNING_EPOCHS_HELP = "fine-tuning epochs (0 = none)"


def add_command(commands: argparse._SubParsersAction, name: str, help: str,
                run: Callable[[argparse.Namespace], int],
                parents: Sequence[argparse.ArgumentParser] = ()) -> argparse.ArgumentParser:
    """A sub-command parser with netshrink's help formatter, the shared groups ``parents`` and
    ``--debug``, whose ``args.func`` is ``run``."""
    parser = commands.add_parser(name, help=help, description=help, formatter_class=HelpFormatter,
                                 parents=[*parents, debug_args()])
    parser.set_defaults(func=run)
    return parser


def debug_args() -> argparse.ArgumentParser:
    """``--debug`` after the command's name; its default is suppressed, so it never overwrites
    a ``--debug`` given before the name."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return parser


def data_args(default: str | None = "fashion-mnist", split: bool = True,
              when_absent: str = "") -> argparse.ArgumentParser:
    """``--data``, ``--data-dir`` and, with ``split``, ``--val-fraction``; ``when_absent`` says
    what a command whose ``default`` is None does without data."""
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("data")
    group.add_argument("--data", default=default,
                       help="fashion-mnist, digits, a .npz (x_train, y_train, x_test, y_test) or an "
                            "image folder with train/ and test/" + when_absent)
    group.add_argument("--data-dir", default=None,
                       help="folder of the Fashion-MNIST IDX files (default: $NETSHRINK_DATA or "
                            "/usr/share/datasets/fashion-mnist)")
    if split:
        group.add_argument("--val-fraction", type=float, default=VAL_FRACTION,
                           help="share of the training set held out as the validation split, on which "
                                "every choice is tuned (never on test)")
    return parser


def fit_args(defaults: Mapping[str, Any], epochs_help: str, *, epochs_required: bool = False,
             only: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The training flags with ``defaults`` (``TRAINING`` or ``FINE_TUNING``); ``only`` keeps some
    of them (by ``FitConfig`` field name); ``epochs_required`` asks for ``--epochs`` instead."""
    flags: dict[str, dict[str, Any]] = {
        "epochs": {"type": int, "help": epochs_help},
        "batch_size": {"type": int, "help": "global batch size (split across DDP ranks)"},
        "lr": {"type": float, "help": "peak learning rate"},
        "optimizer": {"choices": OPTIMIZERS, "help": "optimizer"},
        "weight_decay": {"type": float, "help": "weight decay"},
        "augment": {"action": "store_true", "help": "random crop and horizontal flip of training batches"},
        "seed": {"type": int, "help": "seed of new weights, the batch order and the validation split"},
        "device": {"help": "cpu or cuda"},
    }
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("training")
    for name, options in flags.items():
        if only is not None and name not in only:
            continue
        if name == "epochs" and epochs_required:
            options = {**options, "required": True}
        elif name in defaults:
            options = {**options, "default": defaults[name]}
        group.add_argument(flag(name), **options)
    return parser


def checkpoint_args() -> argparse.ArgumentParser:
    """``--resume`` and ``--no-progress``: for training that keeps its checkpoint in ``--out``."""
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("training")
    group.add_argument("--resume", action="store_true",
                       help="continue an interrupted training from its checkpoint in --out")
    group.add_argument("--no-progress", action="store_true", help="no progress bar or epoch lines")
    return parser


def out_args(receives: str, default: str | None = None) -> argparse.ArgumentParser:
    """``--out``, the command's output folder, which receives ``receives``."""
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("output")
    group.add_argument("--out", required=default is None, default=default, metavar="DIR",
                       help=f"output folder; receives {receives}")
    return parser


def flag(field: str) -> str:
    """The flag that sets a config field: ``weight_decay`` -> ``--weight-decay``."""
    return "--" + field.replace("_", "-")


def in_flag_terms(message: str) -> str:
    """``message`` with the library's names of values the flags set written as those flags:
    ``FitConfig.epochs`` as ``--epochs``, ``epochs=3`` as ``--epochs 3``, ``val_fraction`` as
    ``--val-fraction``."""
    import dataclasses

    from netshrink.train.config import FitConfig

    fields = {f.name for f in dataclasses.fields(FitConfig)} | {"val_fraction", "data_dir"}
    message = re.sub(r"\bFitConfig\.(\w+)", lambda m: flag(m[1]), message)
    message = re.sub(r"\b(\w+)=", lambda m: f"{flag(m[1])} " if m[1] in fields else m[0], message)
    return re.sub(r"\b[a-z]+_[a-z_]+\b", lambda m: flag(m[0]) if m[0] in fields else m[0], message)


def check_device(name: str) -> None:
    """A one-line error, before any work, for a ``--device`` torch does not know or cannot use."""
    import torch

    from netshrink.core.errors import ConfigError

    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name!r} is not a device; use cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: this machine has no CUDA device; use --device cpu")


def fit_config(args: argparse.Namespace, *, none_at_zero: bool = False, **fields: Any) -> FitConfig | None:
    """The ``FitConfig`` of the training flags in ``args`` (and the command's own ``fields``),
    checked once for every command; a bad value is a one-line ``ConfigError`` naming its flag.
    With ``none_at_zero`` (fine-tuning), ``--epochs 0`` returns None: no training.
    """
    from netshrink.core.errors import ConfigError
    from netshrink.train import FitConfig

    if hasattr(args, "device"):
        check_device(args.device)
    values = {name: getattr(args, name) for name in FIT_FIELDS if hasattr(args, name)} | fields
    untrained = none_at_zero and values["epochs"] == 0
    if none_at_zero and values["epochs"] < 0:
        raise ConfigError(f"--epochs must be 0 (no fine-tuning) or more, got {values['epochs']}")
    try:
        config = FitConfig(**{**values, "epochs": 1} if untrained else values)
    except ConfigError as exc:
        raise ConfigError(in_flag_terms(str(exc))) from None
    return None if untrained else config


def load_data(args: argparse.Namespace) -> Dataset:
    """The data set the data flags name, split by ``--val-fraction`` and ``--seed`` where the
    command has them (else the defaults); errors name the flags."""
    from netshrink.core.errors import NetshrinkError
    from netshrink.data import load_dataset

    try:
        return load_dataset(args.data, data_dir=args.data_dir, seed=getattr(args, "seed", 0),
                            val_fraction=getattr(args, "val_fraction", VAL_FRACTION))
    except NetshrinkError as exc:
        raise type(exc)(in_flag_terms(str(exc))) from None


def out_folder(args: argparse.Namespace) -> Path:
    """``--out`` as a folder, refused in one line before any work when it is a file."""
    from netshrink.core.errors import ConfigError

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder")
    return out
