"""What ``netshrink quantize`` and ``netshrink prune`` share for calibration-driven methods and
pretrained transformers: ``--model minilm | smollm2 | hf:PATH`` (``models.pretrained``),
``--calibration-data`` text tokenized by the model's own tokenizer (``data.read_text``), and the
methods themselves, read from the technique registry: every technique of the verb whose config
takes ``calibration_data`` (GPTQ; SparseGPT, Wanda; and any added later, such as AWQ) is a
``--method`` by its registered name, its options set from the flags whose names are its fields.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path
from typing import Any

from netshrink.cli.args import OUTPUT_NAME

#: files one of which a Hugging Face model folder's tokenizer is saved in
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "tokenizer.model",
                   "spiece.model")
#: config fields the shared flags set (field -> flag); a flag given to a method without that field is refused
FIELD_FLAGS = {"bits": "--bits", "group_size": "--group-size", "scheme": "--scheme", "calibration": "--calibration",
               "act_order": "--act-order", "damp": "--damp", "asymmetric": "--asymmetric", "sparsity": "--sparsity",
               "pattern": "--nm",
               "batch_size": "--calibration-batch-size", "calibration_data": "--calibration-data"}


def pretrained_args() -> argparse.ArgumentParser:
    """``--model``, ``--calibration-data``, ``--max-length`` and ``--calibration-batch-size``."""
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("pretrained model and calibration")
    group.add_argument("--model", default=None, metavar="NAME",
                       help="a pretrained transformer instead of CHECKPOINT: minilm, smollm2 or hf:PATH (a Hugging "
                            "Face model folder); written as OUT/model.nsk (load it with netshrink.load(path, "
                            "model=the same architecture))")
    group.add_argument("--calibration-data", default=None, metavar="TEXT",
                       help="calibration text for --model: a .txt file (one passage a line) or a folder of them, "
                            "tokenized by the model's own tokenizer (a CHECKPOINT calibrates on --data's "
                            "validation images)")
    group.add_argument("--max-length", type=int, default=128, help="tokens per calibration passage (longer are cut)")
    group.add_argument("--calibration-batch-size", type=int, default=None,
                       help="calibration samples per batch (default: the method's)")
    return parser


def calibrated_methods(verb: Any) -> dict[str, Any]:
    """``{name: config type}`` of every registered technique of ``verb`` whose config reads
    ``calibration_data``, but ``quantize_``'s plain ``Quantize`` (``--method uniform``) and the
    pruners that set no ``sparsity`` (``transformer_prune`` removes heads and neurons)."""
    from netshrink.core.registry import techniques
    from netshrink.prune import prune_

    methods = {}
    for technique in techniques():
        fields = {f.name for f in dataclasses.fields(technique.config_type)}
        if technique.verb is verb and "calibration_data" in fields and technique.name != "quantize" \
                and (verb is not prune_ or "sparsity" in fields):
            methods[technique.name] = technique.config_type
    return methods


def method_config(name: str, config_type: type, args: argparse.Namespace, calibration: Any,
                  given: dict[str, Any]) -> Any:
    """``config_type`` built from the flags ``given`` (field -> value, only those the user set),
    with ``calibration`` as its data; a flag the method has no field for is one line."""
    from netshrink.core.errors import ConfigError

    fields = {f.name for f in dataclasses.fields(config_type)}
    for field in given:
        if field not in fields:
            raise ConfigError(f"{FIELD_FLAGS[field]} is not an option of --method {name}")
    values = {**given, "calibration_data": calibration}
    if args.calibration_batch_size is not None:
        values["batch_size"] = args.calibration_batch_size
    try:
        return config_type(**values)
    except ConfigError as error:
        raise ConfigError(in_flag_terms(str(error))) from None


def in_flag_terms(message: str) -> str:
    """``group_size`` written as ``--group-size``, and so on for every field a flag sets."""
    return re.sub(r"\b[a-z]+(?:_[a-z]+)*\b", lambda m: FIELD_FLAGS.get(m[0], m[0]) if "_" in m[0] or m[0] == "pattern"
                  else m[0], message)


def load_pretrained_model(args: argparse.Namespace, needs_tokenizer: bool) -> tuple[Any, Any]:
    """``(model, tokenizer)`` of ``--model``; a folder without a tokenizer is refused in one line
    when the calibration text needs one."""
    from netshrink.core.errors import ConfigError
    from netshrink.models.pretrained import load_pretrained

    spec = args.model
    if spec.startswith("hf:") and needs_tokenizer:
        folder = Path(spec[3:]).expanduser()
        if folder.is_dir() and not any((folder / name).is_file() for name in TOKENIZER_FILES):
            raise ConfigError(f"--model {spec} has no tokenizer (none of {', '.join(TOKENIZER_FILES[:3])}...); "
                              "--calibration-data needs the model's own: save it there with "
                              "tokenizer.save_pretrained(PATH)")
    try:  # no progress bar of transformers' loading on the command's stderr
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    except ImportError:
        pass  # load_pretrained says what to install
    loaded = load_pretrained(spec)
    return loaded.model, loaded.tokenizer


def apply_in_flag_terms(model: Any, config: Any) -> None:
    """``apply_(model, config)``, its one-line refusals written with the flags' names."""
    import netshrink
    from netshrink.core.errors import ConfigError

    try:
        netshrink.apply_(model, config)
    except ConfigError as error:
        raise ConfigError(in_flag_terms(str(error))) from None


def calibration_text(args: argparse.Namespace, model: Any, tokenizer: Any) -> dict[str, Any]:
    """``--calibration-data`` tokenized by the model's tokenizer, checked against the model: ids
    inside its vocabulary, passages no longer than its positions (one line each, naming the flag)."""
    from netshrink.core.errors import ConfigError
    from netshrink.data import read_text
    from netshrink.data.text import check_vocabulary

    if args.max_length < 1:
        raise ConfigError(f"--max-length must be at least 1, got {args.max_length}")
    try:
        inputs = read_text(args.calibration_data, tokenizer, max_length=args.max_length)
    except ConfigError as error:
        raise ConfigError(f"--calibration-data {args.calibration_data}: {error}") from None
    check_vocabulary(inputs, model, f"--calibration-data {args.calibration_data}")
    positions = getattr(model.config, "max_position_embeddings", None)
    if positions is not None and inputs["input_ids"].shape[1] > positions:
        raise ConfigError(f"--calibration-data {args.calibration_data}: passages of {inputs['input_ids'].shape[1]} "
                          f"tokens, but the model takes at most {positions}; give --max-length {positions} or less")
    return inputs


def check_source(args: argparse.Namespace) -> None:
    """Exactly one of CHECKPOINT and ``--model``; ``--calibration-data`` only with ``--model``."""
    from netshrink.core.errors import ConfigError

    if (args.checkpoint is None) == (args.model is None):
        raise ConfigError("give the model to compress: a CHECKPOINT file or --model minilm | smollm2 | hf:PATH "
                          "(not both)")
    if args.calibration_data is not None and args.model is None:
        raise ConfigError("--calibration-data is text for a --model; a CHECKPOINT calibrates on --data's "
                          "validation images")


def save_pretrained_result(model: Any, args: argparse.Namespace, extra: str = "") -> Path:
    """Finalize ``model``, write ``OUT/model.nsk`` and print its size against fp32."""
    import netshrink
    from netshrink.measure.size import fp32_baseline

    netshrink.finalize_(model)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / OUTPUT_NAME
    netshrink.save(model, path)
    print(f"{path}: {fp32_baseline(model).versus(path.stat().st_size)}{extra}")
    return path
