"""``netshrink distill``: train a student on one or more teacher checkpoints.

    netshrink distill --teacher T.safetensors [--teacher T2.safetensors ...] --student lenet5 \\
        --T 4 --alpha 0.9 --epochs 20 [--cache-teacher] [--omit-class 3 --adjust-bias] --out runs/kd

Every input (temperature, alpha, output sizes, a cache that does not match) is checked before
anything is written to ``--out``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from netshrink.cli.args import (
    TRAINING,
    TRAINING_EPOCHS_HELP,
    add_command,
    checkpoint_args,
    data_args,
    fit_args,
    fit_config,
    load_data,
    out_args,
    out_folder,
)


def add_distill_parser(commands: argparse._SubParsersAction) -> None:
    """Declare ``netshrink distill`` and its options (``run_distill`` does the work)."""
    p = add_command(commands, "distill", "knowledge distillation: train a student on one or more teacher "
                    "checkpoints (Hinton et al. 2015)", run_distill,
                    parents=[data_args(), fit_args(TRAINING, TRAINING_EPOCHS_HELP), checkpoint_args(),
                             out_args("checkpoint.safetensors, model.safetensors and the teacher-logit cache")])
    p.add_argument("--teacher", action="append", required=True, metavar="CKPT",
                   help="teacher checkpoint (.safetensors); repeat for an ensemble")
    p.add_argument("--student", required=True, metavar="MODEL|CKPT",
                   help="zoo model name (see `netshrink models`) or a checkpoint")
    p.add_argument("--T", type=float, default=4.0, help="softmax temperature")
    p.add_argument("--alpha", type=float, default=0.9,
                   help="weight of the soft-target loss in [0, 1]; 1 = soft labels only")
    p.add_argument("--cache-teacher", action="store_true",
                   help="compute the teachers' logits once and keep them in --out (no augmentation)")
    p.add_argument("--omit-class", type=int, action="append", default=[], metavar="CLASS",
                   help="leave this class out of the transfer set (repeatable)")
    p.add_argument("--adjust-bias", action="store_true",
                   help="after training, raise the omitted classes' output bias by the amount best on validation")
    p.add_argument("--hint", default=None, metavar="STUDENT_LAYER:TEACHER_LAYER",
                   help="FitNets hint between two layers named by module path")
    p.add_argument("--hint-weight", type=float, default=1.0, help="weight of the hint loss")


def _student(spec: str, data: Any) -> Any:
    """A fresh zoo model sized for ``data``, or the model in a checkpoint file."""
    from netshrink.core.errors import ConfigError
    from netshrink.models import create_for_data, list_models
    from netshrink.train import load_model

    if spec in list_models():
        return create_for_data(spec, data.input_shape, data.num_classes)
    if not Path(spec).is_file():
        raise ConfigError(f"--student {spec!r} is neither a zoo model {list_models()} nor a checkpoint file")
    return load_model(spec)


def _hint(spec: str | None) -> tuple[str, str] | None:
    from netshrink.core.errors import ConfigError

    if spec is None:
        return None
    student_layer, sep, teacher_layer = spec.partition(":")
    if not sep or not student_layer or not teacher_layer:
        raise ConfigError(f"--hint {spec!r} must be STUDENT_LAYER:TEACHER_LAYER, e.g. conv2:features.3")
    return student_layer, teacher_layer


def run_distill(args: argparse.Namespace) -> int:
    import torch

    from netshrink.core.errors import ConfigError
    from netshrink.distillation import Distill, choose_class_bias, distill, raise_class_bias_
    from netshrink.measure import evaluate
    from netshrink.train import load_model, save_model
    from netshrink.train.fit import MODEL_NAME

    config = Distill(T=args.T, alpha=args.alpha, cache_teacher=args.cache_teacher,
                     omit_classes=tuple(args.omit_class), hint=_hint(args.hint), hint_weight=args.hint_weight)
    if args.adjust_bias and not args.omit_class:
        raise ConfigError("--adjust-bias raises the omitted classes' bias; give them with --omit-class")
    if args.adjust_bias and args.val_fraction == 0:
        raise ConfigError("--adjust-bias chooses the bias on the validation split; give --val-fraction above 0")
    fit = fit_config(args)
    out_folder(args)
    data = load_data(args)
    teachers = [load_model(path) for path in args.teacher]
    torch.manual_seed(args.seed)
    student = _student(args.student, data)
    result = distill(student, teachers, data, config, fit, out_dir=args.out, resume=args.resume,
                     progress=not args.no_progress, device=args.device)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 alone reports
        return 0
    model = result.model
    if args.adjust_bias:
        amount, val_acc = choose_class_bias(model, data.val, config.omit_classes)
        raise_class_bias_(model, config.omit_classes, amount, data.val.x[:2])
        save_model(Path(args.out) / MODEL_NAME, model)
        print(f"bias of classes {list(config.omit_classes)} raised by {amount} (chosen on validation: "
              f"accuracy {val_acc:.4f})")
    test_acc = evaluate(model, data.test, device=args.device)
    val = f"{result.val_acc:.4f}" if result.val_acc is not None else "n/a (empty validation split)"
    print(f"val accuracy {val}  test accuracy {test_acc:.4f}  -> {Path(args.out) / MODEL_NAME}")
    return 0
