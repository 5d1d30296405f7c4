"""``netshrink train``: train a zoo model, checkpointing every epoch (``--resume`` after a kill).

    netshrink train --model lenet5 --data fashion-mnist --epochs 30 --out runs/lenet5 [--resume]

Under ``torchrun`` every rank runs this; rank 0 alone reports.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

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


def add_train_parser(commands: argparse._SubParsersAction) -> None:
    """Declare ``netshrink train`` (``run_train`` does the work)."""
    p = add_command(commands, "train", "train a zoo model (checkpoint every epoch, --resume after a kill)", run_train,
                    parents=[data_args(), fit_args(TRAINING, TRAINING_EPOCHS_HELP), checkpoint_args(),
                             out_args("checkpoint.safetensors (every epoch) and model.safetensors")])
    p.add_argument("--model", required=True, help="zoo name (see `netshrink models`)")
    p.add_argument("--model-kwargs", default=None, help='JSON of extra model kwargs, e.g. \'{"hidden": 128}\'')
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    p.add_argument("--schedule", default="cosine", choices=["cosine", "step", "constant"],
                   help="learning-rate schedule, per step")
    p.add_argument("--warmup-epochs", type=int, default=0, help="linear warm-up epochs")
    p.add_argument("--label-smoothing", type=float, default=0.0, help="label smoothing of the cross-entropy")


def run_train(args: argparse.Namespace) -> int:
    from netshrink.core.errors import ConfigError
    from netshrink.measure import evaluate
    from netshrink.models import create_for_data, list_models
    from netshrink.train import fit

    config = fit_config(args, momentum=args.momentum, schedule=args.schedule, warmup_epochs=args.warmup_epochs,
                        label_smoothing=args.label_smoothing)
    if args.model not in list_models():
        raise ConfigError(f"unknown model {args.model!r}; choose one of {list_models()}")
    try:
        kwargs = json.loads(args.model_kwargs) if args.model_kwargs else {}
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--model-kwargs is not valid JSON ({exc}); e.g. '{{\"hidden\": 128}}'") from None
    if not isinstance(kwargs, dict):
        raise ConfigError("--model-kwargs must be a JSON object, e.g. '{\"hidden\": 128}'")
    out_folder(args)
    data = load_data(args)
    import torch

    torch.manual_seed(args.seed)
    model = create_for_data(args.model, data.input_shape, data.num_classes, **kwargs)
    result = fit(model, data, config, out_dir=args.out, resume=args.resume,
                 progress=not args.no_progress, device=args.device)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 alone reports
        return 0
    test_acc = evaluate(result.model, data.test, device=args.device)
    val = f"{result.val_acc:.4f}" if result.val_acc is not None else "n/a (empty validation split)"
    print(f"val accuracy {val}  test accuracy {test_acc:.4f}  -> {Path(args.out) / 'model.safetensors'}")
    return 0
