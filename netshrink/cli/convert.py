"""``netshrink convert``: convert a trained checkpoint's layers, fine-tune it, write the .nsk.

    netshrink convert CHECKPOINT --to separable|low-rank [--rank R | --energy E | --param-ratio P]
        [--conv channel|spatial] [--layers a,b] [--epochs N] --out DIR

``--rank`` is the depth multiplier for ``--to separable`` and the rank for ``--to low-rank``.
BatchNorm statistics are re-estimated right after the conversion; fine-tuning distils from the
original model (``netshrink.distillation``). Every value is checked, and the conversion is planned,
before any work is written; the only file written is ``DIR/model.nsk``, atomically, at the end, so
a failure leaves nothing half-written.
"""

from __future__ import annotations

import argparse
from typing import Any

from netshrink.cli.args import (
    FINE_TUNING,
    FINE_TUNING_EPOCHS_HELP,
    OUTPUT_NAME,
    add_command,
    data_args,
    fit_args,
    fit_config,
    load_data,
    out_args,
    out_folder,
)
from netshrink.cli.loading import check_fits, load_any_model

TARGETS = ("separable", "low-rank")


def add_convert_parser(commands: argparse._SubParsersAction) -> None:
    """Declare ``netshrink convert`` and its options (``run_convert`` does the work)."""
    p = add_command(commands, "convert", "convert a checkpoint's convolutions to depthwise separable ones or "
                    "factorize its layers to low rank (SVD-initialised), fine-tune and write a .nsk", run_convert,
                    parents=[data_args(), fit_args(FINE_TUNING, FINE_TUNING_EPOCHS_HELP), out_args(OUTPUT_NAME)])
    p.add_argument("checkpoint", help="model.safetensors / checkpoint.safetensors / file.nsk")
    p.add_argument("--to", required=True, choices=TARGETS, help="the conversion")
    p.add_argument("--rank", type=int, default=None,
                   help="separable: depth multiplier (default 1); low-rank: the rank of every layer")
    p.add_argument("--energy", type=float, default=None,
                   help="low-rank: per layer, keep this share of the squared singular values, in (0, 1]")
    p.add_argument("--param-ratio", type=float, default=None,
                   help="low-rank: keep about this fraction of the converted layers' weights, in (0, 1]")
    p.add_argument("--conv", choices=["channel", "spatial"], default="channel",
                   help="low-rank factorization of Conv2d: k x k to r then 1 x 1, or k x 1 then 1 x k")
    p.add_argument("--layers", default=None, help="comma-separated layer names to convert (default: all that can be)")


def conversion_config(args: argparse.Namespace) -> Any:
    """The ``Separable`` or ``LowRank`` config the options ask for (one-line ConfigErrors)."""
    from netshrink.arch.low_rank import LowRank
    from netshrink.arch.separable import Separable
    from netshrink.core.errors import ConfigError

    layers = tuple(n.strip() for n in args.layers.split(",") if n.strip()) if args.layers is not None else None
    if layers == ():
        raise ConfigError("--layers is empty; give comma-separated layer names, e.g. features.3.0,features.4.0")
    if args.to == "separable":
        if args.energy is not None or args.param_ratio is not None:
            raise ConfigError("--energy and --param-ratio apply to --to low-rank; separable takes --rank "
                              "(the depth multiplier)")
        return Separable(multiplier=1 if args.rank is None else args.rank, layers=layers)
    given = [f"--{n}" for n, v in (("rank", args.rank), ("energy", args.energy), ("param-ratio", args.param_ratio))
             if v is not None]
    if len(given) != 1:
        raise ConfigError(f"--to low-rank needs exactly one of --rank, --energy, --param-ratio (got {given or 'none'})")
    return LowRank(rank=args.rank, energy=args.energy, param_ratio=args.param_ratio, conv=args.conv, layers=layers)


def run_convert(args: argparse.Namespace) -> int:
    import copy

    import torch

    from netshrink.arch.finetune import finetune, reestimate_batchnorm_
    from netshrink.codec.container import save
    from netshrink.core import apply_, get_log
    from netshrink.measure import count_macs, count_parameters, evaluate

    config = conversion_config(args)
    fine_tuning = fit_config(args, none_at_zero=True)
    out = out_folder(args)
    model = load_any_model(args.checkpoint)
    data = load_data(args)
    check_fits(model, data, args.checkpoint)
    original = copy.deepcopy(model).eval()
    before = {"test": evaluate(model, data.test), "params": count_parameters(model),
              "macs": count_macs(model, data.input_shape)}
    apply_(model, config)
    reestimate_batchnorm_(model, data.train.x, seed=args.seed)
    converted_test = evaluate(model, data.test)
    how = "no fine-tuning"
    if fine_tuning is not None:
        torch.manual_seed(args.seed)
        how = finetune(model, original, data, fine_tuning, device=args.device)[1]
        model.cpu()  # measured and saved on the CPU, wherever it was fine-tuned
    path = out / OUTPUT_NAME
    save(model, path)
    record = get_log(model)[-1]
    for name, layer in record["layers"].items():
        print(f"{name:<28} {layer['kind']:<9} rank {layer['rank']:>4}  weights {layer['weights_before']:>9,} -> "
              f"{layer['weights_after']:>9,} ({layer['ratio']:.2f}x fewer)")
    for name, reason in record["skipped"].items():
        print(f"{name:<28} skipped: {reason}")
    params, macs = count_parameters(model), count_macs(model, data.input_shape)
    print(f"\ntest accuracy {evaluate(model, data.test):.4f} after {how} ({converted_test:.4f} right after "
          f"conversion and BatchNorm re-estimation, {before['test']:.4f} before) | params {params:,} (before "
          f"{before['params']:,}) | MACs {macs:,} (before {before['macs']:,}) | {path} {path.stat().st_size:,} B")
    return 0
