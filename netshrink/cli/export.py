"""``netshrink export``: a model to ONNX, checked by running ONNX Runtime against PyTorch.

    netshrink export FILE --onnx OUT.onnx [--int8 [static|dynamic]] --data fashion-mnist
    netshrink export [FILE] --model package.module:function --onnx OUT.onnx --data digits
    netshrink export [FILE] --model hf:PATH|minilm|smollm2 --onnx OUT.onnx [--text FILE] \\
        [--int8 dynamic|static] [--int4 [--group-size 128]] [--opset 21]
    netshrink export [FILE] --model hf:PATH|smollm2 --decoder OUT_DIR [--int4 [--group-size 32]]

An image model's checkpoint or .nsk file is read as ``load_any_model`` reads it; ``--model
package.module:function`` builds a user's own class first (FILE's weights, or its .nsk transform
log, then go into it). A text model (``--model hf:PATH`` or a packaged one) exports with token ids
(``quant.onnx_tokens``), checked on passages of ``--text`` (default: Python's own documentation
topics); ``--int8`` quantizes ONNX Runtime's fused graph (``quant.onnx_fuse``), ``--int4`` runs
GPTQ on those passages and writes ``MatMulNBits`` (``quant.onnx_int4``). ``--decoder`` writes a
causal LM with its KV cache as a folder ONNX Runtime GenAI runs (``quant.onnx_decoder``: fp32, or
with ``--int4`` GPTQ's codes on those passages in 4-bit blocks). Every flag is checked before anything is written.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from typing import Any

from netshrink.cli.args import add_command, data_args

INT8_MODES = ("static", "dynamic")
TEXT_PASSAGES = 64
TEXT_TOKENS = 128
CHECK_PASSAGES = 16
GPTQ_GROUP = 128
DECODER_GROUP = 32
DECODER_CHECK_TOKENS = 64


def add_export_parser(commands: argparse._SubParsersAction) -> None:
    """Declare ``netshrink export`` (``run_export`` does the work)."""
    p = add_command(commands, "export", "export a checkpoint, .nsk file or Hugging Face model to ONNX, checked by "
                    "running ONNX Runtime against PyTorch; early exits leave by confidence inside the graph (ONNX "
                    "If), a slimmable model writes OUT.onnx at its current width and OUT.width-W.onnx per other "
                    "width; --int8 also writes ONNX Runtime's int8 model, --int4 a 4-bit MatMulNBits model (text "
                    "models)", run_export, parents=[data_args()])
    p.add_argument("file", nargs="?", default=None,
                   help="model.safetensors / checkpoint.safetensors / file.nsk (optional with --model)")
    p.add_argument("--onnx", default=None, metavar="OUT.onnx", help="where to write the fp32 ONNX model")
    p.add_argument("--decoder", default=None, metavar="OUT_DIR",
                   help="causal text models (hf:PATH, smollm2): write a new folder ONNX Runtime GenAI runs, the "
                        "decoder with its KV cache (onnxruntime-genai's model builder), fp32, or with --int4 "
                        "4-bit MatMulNBits blocks holding GPTQ's codes calibrated on --text (--group-size, default "
                        f"{DECODER_GROUP}; a tied output layer gets the builder's round-to-nearest)")
    p.add_argument("--model", default=None, metavar="SPEC",
                   help="build the model: package.module:function (a user's class; FILE holds its weights), or a "
                        "text model: hf:PATH (a Hugging Face folder), minilm or smollm2")
    p.add_argument("--text", default=None, metavar="FILE",
                   help=f"text models: passages (a file, one per line, or a folder of .txt) to check and calibrate "
                        f"on (default: {TEXT_PASSAGES} passages of Python's documentation topics)")
    p.add_argument("--int8", nargs="?", const="static", default=None, choices=INT8_MODES,
                   help="also write OUT.int8.onnx: ONNX Runtime's static QDQ quantization calibrated on validation "
                        "batches (the default), or dynamic quantization (int8 weights per channel)")
    p.add_argument("--int4", action="store_true",
                   help="text models: also write OUT.int4.onnx, GPTQ 4-bit weights as MatMulNBits and the word "
                        "embeddings as GatherBlockQuantized")
    p.add_argument("--group-size", type=int, default=None,
                   help=f"int4: GPTQ columns per grid (a power of two >= 16; default {GPTQ_GROUP}, with --decoder "
                        f"{DECODER_GROUP})")
    p.add_argument("--embedding-block", type=int, default=None,
                   help="int4 with --onnx: word-embedding values per 4-bit grid (a power of two >= 16; default: "
                        "quant.onnx_int4.EMBEDDING_BLOCK, 32)")
    p.add_argument("--opset", type=int, default=None,
                   help="ONNX opset of the files (default: the exporter's; int4 needs >= 21)")
    p.add_argument("--calibration", default="minmax", choices=["minmax", "percentile", "entropy"],
                   help="static int8: ONNX Runtime's activation-range calibration")
    p.add_argument("--calibration-samples", type=int, default=512, help="int8: validation images to calibrate on")


def _check_flags(args: argparse.Namespace, text: bool) -> None:
    from netshrink.core.errors import ConfigError
    from netshrink.quant.onnx_int4 import EMBEDDING_BLOCK, MIN_INT4_OPSET

    if args.calibration_samples < 1:
        raise ConfigError(f"--calibration-samples must be at least 1, got {args.calibration_samples}")
    if (args.onnx is None) == (args.decoder is None):
        raise ConfigError("give one of --onnx OUT.onnx (a graph without a KV cache) or --decoder OUT_DIR (a causal "
                          "LM with its KV cache, for ONNX Runtime GenAI)")
    if args.decoder is not None and (not text or args.int8):
        raise ConfigError("--decoder exports a causal text model (--model hf:PATH or smollm2) in fp32 or with --int4; "
                          "--int8 is for --onnx files")
    if args.decoder is not None and args.opset is not None:
        raise ConfigError("--opset is for --onnx files; --decoder takes the opset onnxruntime-genai's builder writes")
    if args.decoder is not None and args.embedding_block is not None:
        raise ConfigError("--embedding-block is for --onnx --int4 files; with --decoder the builder writes the word "
                          "embeddings")
    args.embedding_block = EMBEDDING_BLOCK if args.embedding_block is None else args.embedding_block
    if args.group_size is None:
        args.group_size = DECODER_GROUP if args.decoder is not None else GPTQ_GROUP
    if args.decoder is not None and args.int4:
        from netshrink.quant.onnx_decoder import INT4_BLOCKS

        if args.group_size not in INT4_BLOCKS:
            raise ConfigError(f"--group-size {args.group_size}: the decoder's 4-bit blocks take "
                              f"{', '.join(map(str, INT4_BLOCKS))}")
    if args.file is None and args.model is None:
        raise ConfigError("give the FILE to export, or --model (hf:PATH, minilm, smollm2 or package.module:function)")
    if args.int4 and not text:
        raise ConfigError("--int4 writes MatMulNBits for text models; give --model hf:PATH, minilm or smollm2")
    if args.text is not None and not text:
        raise ConfigError("--text is for text models (--model hf:PATH, minilm or smollm2); image models use --data")
    if args.int4 and args.opset is not None and args.opset < MIN_INT4_OPSET:
        raise ConfigError(f"--opset {args.opset} is too old for --int4: MatMulNBits with a uint4 embedding table "
                          f"needs opset >= {MIN_INT4_OPSET}")
    if args.opset is not None and args.opset < 18 and not args.int4:
        raise ConfigError(f"--opset {args.opset} is too old: torch's ONNX exporter writes opset 18 or later")
    for flag, value in (("--group-size", args.group_size), ("--embedding-block", args.embedding_block)):
        if args.int4 and (value < 16 or value & (value - 1)):
            raise ConfigError(f"{flag} {value}: ONNX Runtime's 4-bit blocks need a power of two >= 16 (32, 64, 128)")


def _check_int4_fits(model: Any, args: argparse.Namespace) -> None:
    """One line naming the flag when the int4 blocks do not divide the model's layers."""
    from torch import nn

    from netshrink.core.errors import ConfigError

    width = model.get_input_embeddings().weight.shape[1]
    if width % args.embedding_block:
        raise ConfigError(f"--embedding-block {args.embedding_block} does not divide the embedding width {width}; "
                          "choose a power of two that does")
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and module.in_features % args.group_size:
            raise ConfigError(f"--group-size {args.group_size} does not divide the {module.in_features} inputs of "
                              f"layer {name!r}; choose a power of two that does")


def is_text_spec(spec: str | None) -> bool:
    """Whether ``--model`` names a pretrained text model rather than a builder."""
    from netshrink.models.pretrained import PACKAGED

    return spec is not None and (spec in PACKAGED or spec.startswith("hf:"))


def build_model(spec: str) -> Any:
    """The model ``package.module:function()`` returns; a one-line error for a bad spec."""
    from torch import nn

    from netshrink.core.errors import ConfigError, one_line

    module_name, _, function = spec.partition(":")
    if not module_name or not function:
        raise ConfigError(f"--model {spec!r}: give package.module:function, hf:PATH, minilm or smollm2")
    try:
        builder = getattr(importlib.import_module(module_name), function)
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"--model {spec!r}: cannot import it ({one_line(error)})") from None
    try:
        model = builder()
    except Exception as error:  # noqa: BLE001 (the user's code; its failure is one line)
        raise ConfigError(f"--model {spec!r} failed: {type(error).__name__}: {one_line(error)}") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"--model {spec!r} returned {type(model).__name__}, not a torch nn.Module")
    return model


def load_into(model: Any, path: str) -> Any:
    """``model`` with the weights of ``path``: a .nsk file (its log replayed on the model) or a
    .safetensors checkpoint / model file of the same architecture."""
    from netshrink.core.errors import ConfigError

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{path} does not exist; give a .safetensors checkpoint or a .nsk file")
    if p.suffix == ".nsk":
        from netshrink.codec.container import load

        return load(p, model=model)
    from netshrink.train.checkpoint import load_checkpoint, load_model_state

    tensors, meta = load_checkpoint(p)
    load_model_state(model, tensors, meta, p)
    return model.eval()


def _text_batch(args: argparse.Namespace, tokenizer: Any) -> dict:
    from netshrink.data.text import read_text

    if args.text is not None:
        return read_text(args.text, tokenizer, TEXT_TOKENS)
    from pydoc_data.topics import topics

    return read_text([topics[key] for key in sorted(topics)[:TEXT_PASSAGES]], tokenizer, TEXT_TOKENS)


def run_export(args: argparse.Namespace) -> int:
    text = is_text_spec(args.model)
    _check_flags(args, text)
    if args.decoder is not None:
        return _export_decoder(args)
    onnx_path = Path(args.onnx)
    if text:
        return _export_text(args, onnx_path)
    return _export_images(args, onnx_path)


def _export_decoder(args: argparse.Namespace) -> int:
    import copy

    import transformers

    from netshrink.models.pretrained import load_pretrained
    from netshrink.quant.onnx_decoder import check_decoder, check_decoder_model, check_new_folder, export_decoder

    transformers.utils.logging.disable_progress_bar()
    check_new_folder(args.decoder)  # before the model loads and calibrates; export_decoder checks it again
    pretrained = load_pretrained(args.model)
    model = load_into(pretrained.model, args.file) if args.file is not None else pretrained.model
    batch = _text_batch(args, pretrained.tokenizer)
    check = batch["input_ids"][0][batch["attention_mask"][0].bool()][None, :DECODER_CHECK_TOKENS]
    check_decoder_model(model)  # before minutes of calibration
    exported = model
    if args.int4:
        from netshrink.quant.gptq import GPTQ
        from netshrink.quant.uniform import quantize_

        exported = copy.deepcopy(model)
        quantize_(exported, GPTQ(bits=4, group_size=args.group_size, act_order=True, calibration_data=batch,
                                 batch_size=8))
    written = export_decoder(exported, pretrained.tokenizer, args.decoder, "int4" if args.int4 else "fp32",
                             check_ids=check)
    how = f", GPTQ's codes (group {args.group_size})" if args.int4 else ""
    difference = check_decoder(written.folder, model, check)
    print(f"{written.folder}: {written.precision} decoder with its KV cache for ONNX Runtime GenAI{how} "
          f"({written.bytes / 1e6:.1f} MB); vs the fp32 PyTorch model {difference:.3g} of the largest logit on a "
          f"passage of {check.shape[1]} tokens")
    return 0


def _export_images(args: argparse.Namespace, onnx_path: Path) -> int:
    import torch

    from netshrink.cli.args import load_data
    from netshrink.cli.loading import check_fits, load_any_model
    from netshrink.quant.onnx_export import (
        export_onnx_graphs,
        onnx_accuracy,
        quantize_onnx_dynamic,
        quantize_onnx_int8,
        run_onnx,
    )

    if args.model is not None:
        model = build_model(args.model)
        model = load_into(model, args.file) if args.file is not None else model.eval()
        source = args.file or args.model
    else:
        model, source = load_any_model(args.file), args.file
    data = load_data(args)
    check_fits(model, data, source)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    check = data.test.x[:256]
    for path, point, difference in export_onnx_graphs(model, onnx_path, check):
        print(f"{path}: {point}; ONNX Runtime vs PyTorch max abs difference {difference:.2e} on {len(check)} "
              "test images")
    if args.int8:
        int8_path = onnx_path.with_suffix(".int8.onnx")
        if args.int8 == "dynamic":
            quantize_onnx_dynamic(onnx_path, int8_path)
        else:
            calibration = (data.val if len(data.val) else data.train).x[:args.calibration_samples]
            quantize_onnx_int8(onnx_path, int8_path, calibration, method=args.calibration)
        with torch.no_grad():
            int8_difference = float(abs(run_onnx(int8_path, check) - model.eval()(check).numpy()).max())
        fp32_acc = onnx_accuracy(onnx_path, data.test.x, data.test.y)
        int8_acc = onnx_accuracy(int8_path, data.test.x, data.test.y)
        print(f"{int8_path}: int8 ({args.int8}) vs PyTorch max abs difference {int8_difference:.3g}; test accuracy "
              f"{int8_acc:.4f} (fp32 ONNX {fp32_acc:.4f})")
    return 0


def _export_text(args: argparse.Namespace, onnx_path: Path) -> int:
    import copy
    import tempfile

    import torch
    import transformers

    from netshrink.core.model_io import output_tensor
    from netshrink.models.pretrained import load_pretrained
    from netshrink.quant.onnx_export import quantize_onnx_dynamic, quantize_onnx_int8, run_onnx
    from netshrink.quant.onnx_fuse import fuse_onnx
    from netshrink.quant.onnx_tokens import export_token_model, relative_difference

    transformers.utils.logging.disable_progress_bar()  # its loading bar is not the user's concern
    pretrained = load_pretrained(args.model)
    model = load_into(pretrained.model, args.file) if args.file is not None else pretrained.model
    if args.int4:
        _check_int4_fits(model, args)
    batch = _text_batch(args, pretrained.tokenizer)
    check = {k: v[:CHECK_PASSAGES] for k, v in batch.items()}
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    difference = export_token_model(model, onnx_path, check, opset=args.opset)
    print(f"{onnx_path}: ONNX Runtime vs PyTorch {difference:.2e} of the largest output on {len(check['input_ids'])} "
          f"passages ({onnx_path.stat().st_size / 1e6:.1f} MB)")
    with torch.no_grad():
        expected = output_tensor(model(**check)).numpy()
    if args.int8:
        int8_path = onnx_path.with_suffix(".int8.onnx")
        with tempfile.TemporaryDirectory() as tmp:
            fused = Path(tmp) / "fused.onnx"
            fuse_onnx(onnx_path, fused, getattr(model.config, "model_type", "bert"))
            if args.int8 == "dynamic":
                quantize_onnx_dynamic(fused, int8_path)
            else:
                quantize_onnx_int8(fused, int8_path, batch, method=args.calibration, batch_size=8)
        print(f"{int8_path}: int8 ({args.int8}, ONNX Runtime's fused graph) vs PyTorch "
              f"{relative_difference(run_onnx(int8_path, check), expected):.3g} of the largest output "
              f"({int8_path.stat().st_size / 1e6:.1f} MB)")
    if args.int4:
        from netshrink.quant.gptq import GPTQ
        from netshrink.quant.onnx_int4 import MIN_INT4_OPSET, export_int4
        from netshrink.quant.uniform import quantize_

        int4_path = onnx_path.with_suffix(".int4.onnx")
        quantized = copy.deepcopy(model)
        quantize_(quantized, GPTQ(bits=4, group_size=args.group_size, act_order=True, calibration_data=batch,
                                  batch_size=8))
        written = export_int4(quantized, int4_path, check, embedding_block=args.embedding_block,
                              opset=args.opset or MIN_INT4_OPSET)
        print(f"{int4_path}: {written.matmul_nbits} MatMulNBits (GPTQ 4-bit, group {args.group_size})"
              f"{', GatherBlockQuantized embeddings' if written.embedding else ''}; vs the fake-quantized PyTorch "
              f"model {written.difference:.2e} of the largest output, vs fp32 "
              f"{relative_difference(run_onnx(int4_path, check), expected):.3g} "
              f"({int4_path.stat().st_size / 1e6:.1f} MB)")
    return 0
