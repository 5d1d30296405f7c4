"""``netshrink prune``: prune a trained checkpoint, fine-tune it, write the .nsk, print the table.

    netshrink prune CHECKPOINT --sparsity 0.9 [--scope global] [--schedule oneshot|gradual|iterative]
        [--structured --amount 0.5] [--epochs N] --out DIR
    netshrink prune --model hf:PATH|minilm|smollm2 --method sparsegpt|wanda --sparsity 0.5 [--nm 2:4] \\
        --calibration-data text.txt --out DIR      # any calibrated config of prune_

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
from netshrink.cli.calibrated import (
    apply_in_flag_terms,
    calibrated_methods,
    calibration_text,
    check_source,
    load_pretrained_model,
    method_config,
    pretrained_args,
    save_pretrained_result,
)
from netshrink.cli.loading import check_fits, load_any_model

MAGNITUDE = "magnitude"
CALIBRATION_IMAGES = 512


def add_prune_parser(commands: argparse._SubParsersAction) -> None:
    """Declare ``netshrink prune`` and its options (``run_prune`` does the work)."""
    p = add_command(commands, "prune", "prune a checkpoint by magnitude or structure, fine-tune it and write "
                    "a .nsk (Han et al. 2015; Zhu & Gupta 2017)", run_prune,
                    parents=[data_args(), fit_args(FINE_TUNING, FINE_TUNING_EPOCHS_HELP), pretrained_args(),
                             out_args(OUTPUT_NAME)])
    p.add_argument("checkpoint", nargs="?", default=None,
                   help="model.safetensors / checkpoint.safetensors / file.nsk (or --model)")
    p.add_argument("--method", default=MAGNITUDE,
                   help=f"{MAGNITUDE}, or a method of prune_ that reads calibration data by its registered name "
                        "(sparsegpt, wanda, ...)")
    p.add_argument("--sparsity", type=float, default=None, help="fraction of weights to zero, in [0, 1)")
    p.add_argument("--nm", default=None, metavar="N:M",
                   help="calibrated methods: at most N nonzero weights in every M consecutive inputs (2:4)")
    p.add_argument("--asymmetric", action="store_true",
                   help="sparsegpt: solve each layer toward the original model's outputs (GPTAQ), making up for "
                        "the layers pruned before it")
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

    if args.sparsity is None and not args.structured and (args.method == MAGNITUDE or args.nm is None):
        raise ConfigError("say what to prune: --sparsity S (magnitude) and/or --structured --amount A"
                          + ("" if args.method == MAGNITUDE else ", or --nm N:M"))
    if args.sparsity is not None:
        check_sparsity(args.sparsity, "--sparsity")
    if args.structured:
        check_sparsity(args.amount, "--amount")
    config = fit_config(args, none_at_zero=True)
    if args.sparsity is not None and args.schedule != "oneshot" and config is None:
        raise ConfigError(f"--schedule {args.schedule} prunes while fine-tuning; give --epochs 1 or more")
    if args.rounds < 1:
        raise ConfigError(f"--rounds must be at least 1, got {args.rounds}")
    if args.method != MAGNITUDE:
        _calibrated_config(args, None)  # the method and its options, checked before any work
        for flag, used in (("--schedule", args.schedule != "oneshot"), ("--scope", args.scope != "layer"),
                           ("--structured", args.structured)):
            if used:
                raise ConfigError(f"{flag} is an option of --method {MAGNITUDE}, not of --method {args.method}")
    else:
        for flag, used in (("--nm", args.nm is not None), ("--asymmetric", args.asymmetric)):
            if used:
                raise ConfigError(f"{flag} is an option of the calibrated methods, not of --method {MAGNITUDE}")
    out_folder(args)
    return config


def _calibrated_config(args: argparse.Namespace, calibration: Any) -> Any:
    from netshrink.core.errors import ConfigError
    from netshrink.prune import prune_

    methods = calibrated_methods(prune_)
    if args.method not in methods:
        raise ConfigError(f"unknown --method {args.method!r}; choose one of {', '.join([MAGNITUDE, *methods])}")
    given = {"sparsity": args.sparsity, "pattern": args.nm, "asymmetric": True if args.asymmetric else None}
    return method_config(args.method, methods[args.method], args, calibration,
                         {k: v for k, v in given.items() if v is not None})


def _run_pretrained(args: argparse.Namespace) -> int:
    """``--model``: prune a pretrained transformer with a calibrated method, no training."""
    from netshrink.core.errors import ConfigError
    from netshrink.measure import count_nonzero, count_parameters

    if args.method == MAGNITUDE:
        raise ConfigError(f"--model is pruned by a calibrated method (--method "
                          f"{' | '.join(calibrated_methods_of_prune())}) with --calibration-data TEXT")
    if _checked(args) is not None:
        raise ConfigError("--epochs trains on labeled --data; a --model is pruned without training here "
                          "(netshrink.recover fine-tunes without labels, in Python)")
    if args.calibration_data is None:
        raise ConfigError(f"--method {args.method} needs --calibration-data TEXT (a .txt file, one passage a line)")
    model, tokenizer = load_pretrained_model(args, needs_tokenizer=True)
    params = count_parameters(model)
    apply_in_flag_terms(model, _calibrated_config(args, calibration_text(args, model, tokenizer)))
    save_pretrained_result(model, args, f" | nonzero {count_nonzero(model):,} of {params:,} parameters")
    return 0


def calibrated_methods_of_prune() -> list[str]:
    from netshrink.prune import prune_

    return list(calibrated_methods(prune_))


def run_prune(args: argparse.Namespace) -> int:
    import torch

    from netshrink.codec.container import save
    from netshrink.core import finalize_
    from netshrink.measure import count_nonzero, count_parameters, evaluate
    from netshrink.prune import GradualPrune, MagnitudePrune, StructuredPrune, iterative_prune, prune_
    from netshrink.train import fit

    check_source(args)
    if args.model is not None:
        return _run_pretrained(args)
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
    elif args.method != MAGNITUDE:
        calibration = (data.val if len(data.val) else data.train).x[:CALIBRATION_IMAGES]
        apply_in_flag_terms(model, _calibrated_config(args, calibration))
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
