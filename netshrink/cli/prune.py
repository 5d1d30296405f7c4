"""``netshrink prune``: prune a trained checkpoint, fine-tune it, write the .nsk, print the table.

    netshrink prune CHECKPOINT --sparsity 0.9 [--scope global] [--schedule oneshot|gradual|iterative]
        [--structured --amount 0.5] [--epochs N] --out DIR

Every value is checked, and the model is checked against the data, before any work; the only file
written is ``DIR/model.nsk``, atomically, at the end, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import argparse
from pathlib import Path
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


def add_prune_parser(commands: argparse._SubParsersAction) -> None:
    """Declare ``netshrink prune`` and its options (``run_prune`` does the work)."""
    p = add_command(commands, "prune", "prune a checkpoint by magnitude or structure, fine-tune it and write "
                    "a .nsk (Han et al. 2015; Zhu & Gupta 2017)", run_prune,
                    parents=[data_args(), fit_args(FINE_TUNING, FINE_TUNING_EPOCHS_HELP), out_args(OUTPUT_NAME)])
    p.add_argument("checkpoint", help="model.safetensors / checkpoint.safetensors / file.nsk")
    p.add_argument("--sparsity", type=float, default=None, help="fraction of weights to zero, in [0, 1)")
    p.add_argument("--scope", choices=["layer", "global"], default="layer",
                   help="the same fraction in every layer, or one magnitude threshold over all")
    p.add_argument("--schedule", choices=["oneshot", "gradual", "iterative"], default="oneshot",
                   help="prune then fine-tune; prune gradually while fine-tuning (cubic); or --rounds "
                        "rounds of prune then --epochs of fine-tuning")
    p.add_argument("--rounds", type=int, default=3, help="prune-retrain rounds of --schedule iterative")
    p.add_argument("--structured", action="store_true",
                   help="first remove whole neurons / channels (--amount of each group); the model shrinks")
    p.add_argument("--amount", type=float, default=0.5, help="fraction of channels --structured removes")
    p.add_argument("--ranking", choices=["l1", "l2", "bn"], default="l1", help="channel ranking of --structured")


def _checked(args: argparse.Namespace) -> Any:
    """The fine-tuning config (None: none), after every option has been checked (one-line ConfigErrors)."""
    from netshrink.core.errors import ConfigError
    from netshrink.prune.selection import check_sparsity

    if args.sparsity is None and not args.structured:
        raise ConfigError("say what to prune: --sparsity S (magnitude) and/or --structured --amount A")
    if args.sparsity is not None:
        check_sparsity(args.sparsity, "--sparsity")
    if args.structured:
        check_sparsity(args.amount, "--amount")
    config = fit_config(args, none_at_zero=True)
    if args.sparsity is not None and args.schedule != "oneshot" and config is None:
        raise ConfigError(f"--schedule {args.schedule} prunes while fine-tuning; give --epochs 1 or more")
    if args.rounds < 1:
        raise ConfigError(f"--rounds must be at least 1, got {args.rounds}")
    out_folder(args)
    return config


def run_prune(args: argparse.Namespace) -> int:
    import torch

    from netshrink.codec.container import save
    from netshrink.core import finalize_
    from netshrink.measure import count_nonzero, count_parameters, evaluate
    from netshrink.prune import GradualPrune, MagnitudePrune, StructuredPrune, iterative_prune, prune_
    from netshrink.train import fit

    config = _checked(args)
    model = load_any_model(args.checkpoint)
    data = load_data(args)
    check_fits(model, data, args.checkpoint)
    before = {"test": evaluate(model, data.test), "params": count_parameters(model),
              "nonzero": count_nonzero(model)}
    torch.manual_seed(args.seed)
    model.train()
    if args.structured:
        prune_(model, StructuredPrune(amount=args.amount, ranking=args.ranking))
    tune = config is not None
    if args.sparsity is not None and args.schedule == "iterative":
        iterative_prune(model, data, args.sparsity, args.rounds, config, scope=args.scope, progress=False,
                        device=args.device)
        tune = False
    elif args.sparsity is not None and args.schedule == "gradual":
        fit(model, data, config, progress=False, device=args.device,
            callbacks=[GradualPrune(args.sparsity, scope=args.scope)])
        tune = False
    elif args.sparsity is not None:
        prune_(model, MagnitudePrune(sparsity=args.sparsity, scope=args.scope))
    if tune:
        fit(model, data, config, progress=False, device=args.device)
    model.cpu()  # measured and saved on the CPU, wherever it was fine-tuned
    finalize_(model)
    path = Path(args.out) / OUTPUT_NAME
    save(model, path)
    _report(model, data, before, path)
    return 0


def _report(model: Any, data: Any, before: dict, path: Path) -> None:
    from netshrink.measure import count_nonzero, count_parameters, evaluate, format_layer_table, layer_table
    from netshrink.measure.size import fp32_baseline

    print(format_layer_table(layer_table(model, data.input_shape)))
    test, params, nonzero = evaluate(model, data.test), count_parameters(model), count_nonzero(model)
    print(f"\ntest accuracy {test:.4f} (before {before['test']:.4f}) | params {params:,} (before "
          f"{before['params']:,}) | nonzero {nonzero:,} (before {before['nonzero']:,}; "
          f"{before['nonzero'] / max(1, nonzero):.1f}x fewer) | {path} "
          f"{fp32_baseline(model).versus(path.stat().st_size)}")
