"""``netshrink auto``: compress a model to a size, latency or MACs budget automatically (``netshrink.autocompress``).

    netshrink auto MODEL --data D --max-bytes 20KB|45x [--max-drop 0.5] [--time 60m] --out DIR [--jobs N]
    netshrink auto --model minilm|hf:PATH --text FILE [--validation-text FILE] --max-bytes 8x --max-drop 2 \
        --time 30m --out DIR

A text encoder (``--model``) is searched on its text (``autocompress.text``): its fidelity, in place
of accuracy, is 100 x the mean cosine of its sentence embeddings to the original's on the
validation passages, so ``--max-drop 2`` asks for a cosine >= 0.98.

Writes ``DIR/model.nsk`` and ``DIR/recipe.toml`` (the chosen point; ``netshrink run`` reproduces it),
``DIR/report.html``, ``DIR/result.json`` and every point's recipe and run; a rerun into ``DIR``
resumes. Bad input (an impossible budget, a time limit too short for the first measurements, a
model with no layer any family applies to) is one line and exit status 2; a time limit too short
for one trained point writes the one-shot point and ends with one line and status 2 as well.
"""

from __future__ import annotations

import argparse
import re
import sys

from netshrink.cli.args import add_command, data_args, fit_args, out_args

#: the library's names of the budget's and recovery's fields, as this command's flags
FLAGS = {"max_bytes": "--max-bytes", "max_latency_ms": "--max-latency-ms", "max_macs": "--max-macs",
         "max_drop": "--max-drop", "time_limit": "--time", "jobs": "--jobs",
         "calibration_samples": "--calibration-samples", "builder": "--builder", "Recovery.epochs": "--epochs",
         "Recovery.cluster_epochs": "--cluster-epochs", "Recovery.lr": "--lr", "Recovery.batch_size": "--batch-size",
         "sparsities": "--sparsities", "cluster_bits": "--cluster-bits", "int_bits": "--int-bits",
         "amounts": "--amounts", "max_length": "--max-length", "runtime": "--runtime"}
RECOVERY = {"epochs": 4, "batch_size": 128, "lr": 0.01}


def add_auto_parser(commands: argparse._SubParsersAction) -> None:
    """Declare ``netshrink auto`` (``run_auto`` does the work)."""
    p = add_command(commands, "auto", "compress a model to a size, latency or MACs budget: per-layer sensitivities, "
                    "an integer program across families, recovery training, verified points until the time limit",
                    run_auto, parents=[data_args(), fit_args(RECOVERY, "fine-tuning epochs after pruning, per point "
                                                             "(times the point's recovery factor)",
                                                             only=("epochs", "batch_size", "lr")),
                                       out_args("model.nsk and recipe.toml (the chosen point), report.html, "
                                                "result.json and every point (a rerun resumes)")])
    p.add_argument("model", nargs="?", default=None, help="a trained model: .safetensors checkpoint or .nsk file")
    text = p.add_argument_group("text encoder (instead of MODEL and --data)")
    text.add_argument("--model", dest="text_model", default=None, metavar="NAME",
                      help="a Hugging Face text encoder: minilm or hf:PATH; fidelity is 100 x the mean cosine of its "
                           "sentence embeddings to the original's on validation passages")
    text.add_argument("--text", default=None, metavar="FILE",
                      help="its text, one passage a line: split into calibration and validation passages (one in "
                           "five held out), unless --validation-text is given")
    text.add_argument("--validation-text", default=None, metavar="FILE",
                      help="validation passages (then all of --text calibrates)")
    text.add_argument("--max-length", type=int, default=128, help="tokens per passage (longer are cut)")
    budget = p.add_argument_group("budget (exactly one of the first three)")
    budget.add_argument("--max-bytes", help="file size: 20000, 20KB, 1.5MB, 20KiB, or 45x (smaller than the "
                                            "original's dense fp32 file)")
    budget.add_argument("--max-latency-ms", help="batch-1 latency on this CPU, one thread: ms, or 2.5x (faster)")
    budget.add_argument("--max-macs", help="MACs per sample, or 3x (fewer)")
    budget.add_argument("--runtime", choices=("torch", "onnxruntime"), default="torch",
                        help="where --max-latency-ms is timed: PyTorch eager, or ONNX Runtime on the exported model")
    budget.add_argument("--max-drop", type=float, default=None,
                        help="validation accuracy the result may lose, in points (0.5: half a point); a text "
                             "encoder's, points of 100 x cosine (2: cosine >= 0.98)")
    budget.add_argument("--time", default="60m", help="time limit of the whole search (90s, 60m, 2h), resumed runs "
                                                      "included")
    space = p.add_argument_group("search space (comma-separated lists; an empty list leaves the family out)")
    space.add_argument("--sparsities", default="0,0.5,0.7,0.8,0.9,0.93,0.95,0.97",
                       help="magnitude sparsities tried in every layer")
    space.add_argument("--cluster-bits", default="2,3,4,5,6,7,8", help="codebook bits tried (weight sharing)")
    space.add_argument("--int-bits", default="2,3,4,5,6,7,8", help="uniform-grid bits tried")
    space.add_argument("--amounts", default="0.25,0.5,0.75",
                       help="shares of output channels removed, for --max-latency-ms and --max-macs")
    p.add_argument("--points", type=int, default=None,
                   help="try at most this many of the scheduled points (default: all, while --time lasts)")
    p.add_argument("--cluster-epochs", type=int, default=2, help="centroid fine-tuning epochs after clustering")
    p.add_argument("--no-distill", action="store_true", help="recover on labels, not from the original's outputs")
    p.add_argument("--jobs", type=int, default=1, help="processes measuring layers and running points at once")
    p.add_argument("--calibration-samples", type=int, default=None,
                   help="samples the sensitivities are measured on: validation images (default 512), or a text "
                        "encoder's calibration passages (default 32)")
    p.add_argument("--builder", default=None, help="for a user's class: package.module:function returning an "
                                                   "untrained model of it (MODEL then holds its weights)")
    p.add_argument("--hand", action="append", default=[], metavar="REPORT.json",
                   help="a `netshrink run` report.json whose result the report shows beside the search's points")


def in_flags(message: str) -> str:
    """``message`` with the library's field names written as this command's flags."""
    names = sorted(FLAGS, key=len, reverse=True)  # Recovery.epochs before epochs
    return re.sub(r"\b(" + "|".join(map(re.escape, names)) + r")\b", lambda m: FLAGS[m[1]], message)


def _model(args: argparse.Namespace):
    """MODEL: a zoo model's checkpoint or .nsk file, or a user's class from ``--builder`` filled with it."""
    from netshrink.cli.loading import load_any_model
    from netshrink.core.errors import ConfigError
    from netshrink.pipeline.recipe import import_builder
    from netshrink.pipeline.run import fill_from

    if args.builder is None:
        return load_any_model(args.model)
    problems: list[str] = []
    function = import_builder(args.builder, "--builder", problems)
    if problems:
        raise ConfigError(problems[0])
    return fill_from(function(), args.model)


def _numbers(text: str, flag: str, kind: type) -> tuple:
    from netshrink.core.errors import ConfigError

    try:
        return tuple(kind(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: give comma-separated {kind.__name__}s, e.g. 2,4,8") from None


def _space(args: argparse.Namespace):
    """The ``SearchSpace`` of the space flags (it checks the values)."""
    from netshrink.autocompress import SearchSpace
    from netshrink.core.errors import ConfigError

    if args.points is not None and args.points < 1:
        raise ConfigError(f"--points must be at least 1, got {args.points}")
    return SearchSpace(sparsities=_numbers(args.sparsities, "--sparsities", float),
                       cluster_bits=_numbers(args.cluster_bits, "--cluster-bits", int),
                       int_bits=_numbers(args.int_bits, "--int-bits", int),
                       amounts=_numbers(args.amounts, "--amounts", float))


def _check_text_flags(args: argparse.Namespace) -> None:
    """One line for a text encoder's flags given wrong (before anything is loaded or written)."""
    from netshrink.autocompress.text import is_text_model
    from netshrink.core.errors import ConfigError

    if args.text_model is None:
        if args.text is not None or args.validation_text is not None:
            flag = "--text" if args.text is not None else "--validation-text"
            raise ConfigError(f"{flag} is for text encoders (--model minilm or hf:PATH); image models use MODEL and "
                              "--data")
        if args.model is None:
            raise ConfigError("give MODEL (a checkpoint or .nsk file), or --model (a text encoder: minilm or "
                              "hf:PATH) with --text")
        return
    if args.model is not None:
        raise ConfigError(f"give MODEL ({args.model}) or --model ({args.text_model}), not both")
    if not is_text_model(args.text_model):
        raise ConfigError(f"--model {args.text_model!r}: give a text encoder, minilm or hf:PATH (a Hugging Face "
                          "model folder)")
    if args.text is None:
        raise ConfigError(f"--model {args.text_model} needs --text FILE (one passage a line)")
    if args.max_length < 2:
        raise ConfigError(f"--max-length must be at least 2 tokens, got {args.max_length}")


def run_auto(args: argparse.Namespace) -> int:
    from netshrink.autocompress import SCHEDULE, TEXT_SCHEDULE, Budget, Recovery, auto
    from netshrink.cli.args import load_data, out_folder
    from netshrink.cli.loading import check_fits
    from netshrink.core.errors import ConfigError

    try:
        _check_text_flags(args)
        budget = Budget(max_bytes=args.max_bytes, max_latency_ms=args.max_latency_ms, max_macs=args.max_macs,
                        max_drop=args.max_drop, time_limit=args.time, runtime=args.runtime)
        recovery = Recovery(epochs=args.epochs, cluster_epochs=args.cluster_epochs, distill=not args.no_distill,
                            lr=args.lr, batch_size=args.batch_size)
        space = _space(args)
        out_folder(args)
        if args.text_model is not None:
            text = {"text": args.text, "validation": args.validation_text, "max_length": args.max_length}
            auto(args.text_model, text, budget, args.out, jobs=args.jobs, calibration_samples=args.calibration_samples,
                 hand=args.hand, schedule=TEXT_SCHEDULE[:args.points])
            return 0  # a text encoder's points are not trained: no partial result
        data = load_data(args)
        model = _model(args)
        check_fits(model, data, args.model)
        table = {"name": args.data, "val_fraction": args.val_fraction}
        if args.data_dir:
            table["dir"] = args.data_dir
        result = auto(model, table, budget, args.out, recovery=recovery, space=space, jobs=args.jobs,
                      builder=args.builder, calibration_samples=args.calibration_samples, hand=args.hand,
                      schedule=SCHEDULE[:args.points])
    except ConfigError as error:
        raise type(error)(in_flags(str(error))) from None
    if result.partial:
        print(f"netshrink: error: {in_flags(result.partial)}; give a longer --time (the result so far is in "
              f"{args.out})", file=sys.stderr)
        return 2
    return 0
