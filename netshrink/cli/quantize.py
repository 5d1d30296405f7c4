"""``netshrink quantize`` (``netshrink export`` is in ``export.py``).

    netshrink quantize CHECKPOINT --method uniform|cluster|binary --bits 4 [--per-channel] \\
        [--epochs N --data fashion-mnist] --out DIR          # writes DIR/model.nsk
    netshrink quantize --model hf:PATH|minilm|smollm2 --method gptq --bits 4 --group-size 128 \\
        --calibration-data text.txt --out DIR                # any calibrated config of quantize_

Every input (bits, method, data shape) is checked before anything is written.
"""

from __future__ import annotations

import argparse
from typing import Any

from netshrink.cli.args import (
    FINE_TUNING,
    OUTPUT_NAME,
    add_command,
    checkpoint_args,
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

METHODS = ("uniform", "cluster", "binary")
DEFAULT_BITS = {"uniform": "8", "cluster": "4", "binary": "1"}
CALIBRATION_IMAGES = 512
TRAINING_FOLDER = "training"


def add_quantize_parser(commands: argparse._SubParsersAction) -> None:
    """Declare ``netshrink quantize`` (``run_quantize`` does the work)."""
    p = add_command(commands, "quantize", "quantize a checkpoint or .nsk file: uniform int2..int8 / fp16 / bf16, "
                    "weight clustering (k-means shared weights) or binary weights; optional quantization-aware "
                    "training or centroid fine-tuning; writes OUT/model.nsk", run_quantize,
                    parents=[data_args(default=None, when_absent=" (none: no training, no accuracy)"),
                             fit_args(FINE_TUNING, "epochs of quantization-aware training / centroid fine-tuning "
                                      "on --data (0 = post-training only)"), checkpoint_args(), pretrained_args(),
                             out_args(f"{OUTPUT_NAME} (and the training's checkpoint in {TRAINING_FOLDER}/)")])
    p.add_argument("checkpoint", nargs="?", default=None,
                   help="model.safetensors / checkpoint.safetensors / file.nsk (or --model)")
    p.add_argument("--method", default="uniform",
                   help=f"{', '.join(METHODS)}, or a method of quantize_ that reads calibration data by its "
                        "registered name (gptq, ...)")
    p.add_argument("--bits", default=None, help="bits per weight: 2..8, fp16 or bf16 (uniform; default 8), "
                   "1..8 (cluster; default 4), 1 (binary); calibrated methods: theirs (gptq: 4)")
    p.add_argument("--per-channel", action="store_true", help="uniform: one scale per output channel")
    p.add_argument("--group-size", type=int, default=None,
                   help="one grid per this many consecutive weights of each channel (uniform: embeddings too; "
                        "gptq); it must divide every layer's input width")
    p.add_argument("--scheme", default=None, choices=["symmetric", "affine"],
                   help="grid scheme (uniform: default symmetric; gptq: affine)")
    p.add_argument("--calibration", default=None, choices=["minmax", "percentile", "mse"],
                   help="how the clipping range is chosen (default minmax)")
    p.add_argument("--embedding-bits", type=int, default=None,
                   help="calibrated methods (which quantize Linear / Conv layers): also round the embedding tables "
                        "to this many bits, per row or per --group-size group (uniform includes them already)")
    p.add_argument("--act-order", action="store_true", help="gptq: columns in order of decreasing activation energy")
    p.add_argument("--damp", type=float, default=None, help="gptq: dampening, a fraction of the mean Hessian diagonal")
    p.add_argument("--asymmetric", action="store_true",
                   help="gptq: solve each layer toward the original model's outputs (GPTAQ), making up for the "
                        "layers changed before it")
    p.add_argument("--activation-bits", type=int, default=None, help="uniform: also quantize layer inputs to this "
                   f"many bits, calibrated on {CALIBRATION_IMAGES} validation images of --data")
    p.add_argument("--init", default="linear", choices=["linear", "density", "random", "optimal"],
                   help="cluster: centroid initialisation (Deep Compression 3.2; optimal = Ckmeans.1d.dp)")
    p.add_argument("--binary-method", default="bwn", choices=["bwn", "binaryconnect"],
                   help="binary: scaled signs (XNOR-Net BWN) or plain signs (BinaryConnect)")


def _given(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields the user set by flag (a calibrated method keeps its defaults for the rest)."""
    bits = None if args.bits is None else int(args.bits) if args.bits.isdigit() else args.bits
    given = {"bits": bits, "group_size": args.group_size, "scheme": args.scheme, "calibration": args.calibration,
             "damp": args.damp, "act_order": True if args.act_order else None,
             "asymmetric": True if args.asymmetric else None}
    return {field: value for field, value in given.items() if value is not None}


def _config(args: argparse.Namespace, calibration: Any) -> Any:
    """The config of ``--method`` and the flags; ``calibration``: inputs for the calibrated ones."""
    from netshrink.core.errors import ConfigError
    from netshrink.quant import Binarize, Cluster, Quantize, quantize_

    methods = calibrated_methods(quantize_)
    if args.method in methods:
        return method_config(args.method, methods[args.method], args, calibration, _given(args))
    if args.method not in METHODS:
        raise ConfigError(f"unknown --method {args.method!r}; choose one of {', '.join([*METHODS, *methods])}")
    for flag, value in (("--act-order", args.act_order), ("--damp", args.damp), ("--asymmetric", args.asymmetric)):
        if value:
            raise ConfigError(f"{flag} is not an option of --method {args.method}")
    bits_text = args.bits if args.bits is not None else DEFAULT_BITS[args.method]
    bits = int(bits_text) if bits_text.isdigit() else bits_text  # the configs check the range
    if args.method == "uniform":
        granularity = "group" if args.group_size is not None else "channel" if args.per_channel else "tensor"
        return Quantize(bits=bits, scheme=args.scheme or "symmetric", calibration=args.calibration or "minmax",
                        granularity=granularity, group_size=args.group_size or 128,
                        activation_bits=args.activation_bits,
                        calibration_data=None if args.activation_bits is None else calibration)
    if args.group_size is not None:
        raise ConfigError(f"--group-size is not an option of --method {args.method}")
    if args.method == "cluster":
        return Cluster(bits=bits, init=args.init)
    if bits != 1:
        raise ConfigError(f"binary weights have 1 bit, got --bits {bits_text}; leave --bits out")
    return Binarize(method=args.binary_method)


def _embedding_config(args: argparse.Namespace) -> Any:
    """``--embedding-bits``: round-to-nearest per-row / per-group grids on the ``nn.Embedding`` tables."""
    from torch import nn

    from netshrink.core.errors import ConfigError
    from netshrink.quant import Quantize, quantize_

    if args.embedding_bits is None:
        return None
    if args.method not in calibrated_methods(quantize_):
        raise ConfigError(f"--embedding-bits is for the calibrated methods; --method {args.method} quantizes the "
                          "embedding tables with --bits already" if args.method == "uniform" else
                          f"--embedding-bits is for the calibrated methods, not --method {args.method}")
    return Quantize(bits=args.embedding_bits, scheme="affine", granularity="group" if args.group_size else "channel",
                    group_size=args.group_size or 128, filter_fn=lambda module, name: isinstance(module, nn.Embedding))


def _needs_calibration(args: argparse.Namespace) -> bool:
    from netshrink.quant import quantize_

    return args.activation_bits is not None or args.method in calibrated_methods(quantize_)


def _run_pretrained(args: argparse.Namespace) -> int:
    """``--model``: quantize a pretrained transformer (calibrated on ``--calibration-data``), no training."""
    from netshrink.core.errors import ConfigError

    if fit_config(args, none_at_zero=True) is not None:
        raise ConfigError("--epochs trains on labeled --data; a --model is quantized without training here "
                          "(netshrink.recover fine-tunes without labels, in Python)")
    out_folder(args)
    needs = _needs_calibration(args)
    if needs and args.calibration_data is None:
        raise ConfigError(f"--method {args.method}{' --activation-bits' * (args.activation_bits is not None)} needs "
                          "--calibration-data TEXT (a .txt file, one passage a line)")
    _config(args, None)  # every flag checked before the model is read
    if args.calibration_data is not None and not needs:
        raise ConfigError(f"--method {args.method} reads no calibration data; leave --calibration-data out (or "
                          "give --activation-bits)")
    embeddings = _embedding_config(args)
    model, tokenizer = load_pretrained_model(args, needs_tokenizer=args.calibration_data is not None)
    calibration = calibration_text(args, model, tokenizer) if args.calibration_data is not None else None
    apply_in_flag_terms(model, _config(args, calibration))
    if embeddings is not None:
        apply_in_flag_terms(model, embeddings)
    save_pretrained_result(model, args)
    return 0


def run_quantize(args: argparse.Namespace) -> int:
    import netshrink
    from netshrink.core.errors import ConfigError
    from netshrink.measure import evaluate
    from netshrink.measure.size import fp32_baseline

    check_source(args)
    if args.model is not None:
        return _run_pretrained(args)
    training = fit_config(args, none_at_zero=True)
    if training is not None and args.data is None:
        raise ConfigError("--epochs needs training data; add --data (e.g. --data fashion-mnist)")
    if args.activation_bits is not None and (args.method != "uniform" or args.data is None):
        raise ConfigError("--activation-bits needs --method uniform and --data (its validation images calibrate "
                          "the activation grids)")
    if _needs_calibration(args) and args.data is None:
        raise ConfigError(f"--method {args.method} calibrates on --data's validation images; add --data")
    out = out_folder(args)
    model = load_any_model(args.checkpoint)
    data = None
    if args.data is not None:
        data = load_data(args)
        check_fits(model, data, args.checkpoint)
        before = evaluate(model, data.test)
    config = _config(args, None if data is None else (data.val if len(data.val) else data.train).x[:CALIBRATION_IMAGES])
    embeddings = _embedding_config(args)
    apply_in_flag_terms(model, config)
    if embeddings is not None:
        apply_in_flag_terms(model, embeddings)
    if training is not None:
        netshrink.fit(model, data, training, out_dir=out / TRAINING_FOLDER, resume=args.resume,
                      progress=not args.no_progress, device=args.device)
        model.cpu()  # finalized, saved and measured on the CPU, wherever it trained
    netshrink.finalize_(model)
    out.mkdir(parents=True, exist_ok=True)
    path = out / OUTPUT_NAME
    netshrink.save(model, path)
    line = f"{path}: {fp32_baseline(model).versus(path.stat().st_size)}"
    if data is not None:
        line += f" | test accuracy {evaluate(model, data.test):.4f} (before {before:.4f})"
    print(line)
    return 0
