"""A decoder LLM to ONNX with its KV cache, through onnxruntime-genai's model builder.

``export_decoder(model, folder, precision)`` writes a folder ONNX Runtime GenAI runs
(``model.onnx`` + its weights + ``genai_config.json``): one graph whose inputs are the new token
ids, the attention mask and the cached keys and values of every layer, and whose outputs are the
logits and the updated cache, so generating a token costs one token's forward, not the whole
context's. We do not write that graph by hand: the builder (``python -m
onnxruntime_genai.models.builder``, Microsoft's, shipped with ``onnxruntime-genai``) builds it with
``GroupQueryAttention`` over the cache, fused rotary embeddings and norms, and, for ``int4``, ONNX
Runtime's 4-bit ``MatMulNBits`` blocks for every projection and the LM head: the builder's
round-to-nearest, or, for layers netshrink quantized (GPTQ's grids), our own codes placed in its
graph (``onnx_decoder_grids``).

The builder reads a Hugging Face folder, so the model (a ``*ForCausalLM`` of an architecture the
builder knows: ``BUILDER_ARCHITECTURES``) is written to a temporary one first: its config and its
weights (``safetensors``) and its tokenizer. The builder builds every layer from
the config, so a model whose layers no longer have the config's shapes (pruned per layer) is refused
in one line, as is anything the builder itself refuses.

``decoder_logits`` runs the exported file on a batch from an empty cache (one ONNX Runtime
forward, or with its last tokens decoded one at a time through the cache), which ``check_decoder``
compares with PyTorch and ``decoder_perplexity`` scores.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from netshrink.core.errors import ConfigError, one_line

PRECISIONS = ("fp32", "int4")
#: weights per 4-bit scale in the builder's MatMulNBits blocks (the default, and what it takes)
INT4_BLOCK = 32
INT4_BLOCKS = (16, 32, 64, 128, 256)
#: the Hugging Face architectures this module passes to the builder (a subset of what it knows:
#: decoder-only LLMs with separate q/k/v and gate/up/down projections, as ``onnx_decoder_grids`` maps them
BUILDER_ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM",
                         "GemmaForCausalLM", "Gemma2ForCausalLM", "OlmoForCausalLM", "GraniteForCausalLM")
#: ONNX Runtime's GroupQueryAttention kernel takes heads of a multiple of this many values
GQA_HEAD_MULTIPLE = 8
#: largest ONNX Runtime vs PyTorch logit difference accepted for an fp32 export, relative to the
#: largest logit (float32 sums in another order: measured 5e-6 on SmolLM2-135M and 1e-6 on a random
#: Llama of width 256; onnxruntime-genai 0.18's graph is wrong, 0.05-1.4 off, for hidden widths of 128
#: and less, which this check refuses)
DECODER_TOLERANCE = 1e-4
#: tokens of the default check sequence, and how many of its last tokens go through the KV cache
CHECK_TOKENS = 16
CHECK_CACHED = 2


@dataclass(frozen=True)
class DecoderExport:
    """A folder ONNX Runtime GenAI loads (``onnxruntime_genai.Model(str(folder))``)."""

    folder: Path
    precision: str
    #: largest logit difference against PyTorch on the check ids, relative to the largest logit
    difference: float

    @property
    def onnx_path(self) -> Path:
        return self.folder / "model.onnx"

    @property
    def bytes(self) -> int:
        """The graph and its weights (what is loaded), without the tokenizer files."""
        return sum(p.stat().st_size for p in self.folder.iterdir() if p.name.startswith("model.onnx"))


def check_decoder_model(model: nn.Module) -> str:
    """The model's architecture name, or a one-line ``ConfigError`` saying why the builder cannot
    take it."""
    config = getattr(model, "config", None)
    architectures = list(getattr(config, "architectures", None) or [type(model).__name__])
    if config is None or architectures[0] not in BUILDER_ARCHITECTURES:
        raise ConfigError(f"{type(model).__name__} is not a decoder LLM the KV-cache export knows; it takes a "
                          f"Hugging Face {', '.join(BUILDER_ARCHITECTURES)}")
    head = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    if head % GQA_HEAD_MULTIPLE:
        raise ConfigError(f"attention heads of {head} values: ONNX Runtime's GroupQueryAttention, which the KV-cache "
                          f"export uses, needs a multiple of {GQA_HEAD_MULTIPLE}")
    if importlib.util.find_spec("onnxruntime_genai") is None:
        raise ConfigError("the KV-cache export needs onnxruntime-genai: pip install onnxruntime-genai")
    wrong = {str(p.dtype) for p in model.parameters() if p.is_floating_point() and p.dtype != torch.float32}
    if wrong:
        raise ConfigError(f"the KV-cache export takes fp32 weights and the model has {', '.join(sorted(wrong))}; "
                          "call model.float() first")
    with torch.device("meta"):
        reference = type(model)(config)
    expected = {name: tuple(p.shape) for name, p in reference.state_dict().items()}
    names = set(model.state_dict())
    missing, extra = sorted(set(expected) - names), sorted(names - set(expected))
    if missing or extra:
        raise ConfigError(f"the model's layers differ from its config ({len(missing)} missing, e.g. "
                          f"{(missing or ['none'])[0]!r}; {len(extra)} extra, e.g. {(extra or ['none'])[0]!r}); the "
                          "KV-cache export builds every layer from the config")
    for name, tensor in model.state_dict().items():  # the same names, checked above
        if tuple(tensor.shape) != expected[name]:
            raise ConfigError(f"layer {name!r} has shape {tuple(tensor.shape)} where the model's config says "
                              f"{expected[name]} (pruned per layer?); the KV-cache export builds every layer from "
                              "the config")
    return architectures[0]


def check_new_folder(folder: str | Path) -> Path:
    """``folder``, absolute, where an export may appear: new, or an empty folder that is not the
    current one (a one-line ``ConfigError`` otherwise)."""
    folder = Path(folder).resolve()
    if folder == Path.cwd().resolve():
        raise ConfigError("give a new folder for the export, not the current one")
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ConfigError(f"{folder} already exists and is not an empty folder; give a new folder for the export")
    return folder


def export_decoder(model: nn.Module, tokenizer, folder: str | Path, precision: str = "int4",
                   check_ids: torch.Tensor | None = None, threads: int | None = None,
                   block_size: int | None = None) -> DecoderExport:
    """``model`` (a Hugging Face causal LM) and its ``tokenizer`` (a ``transformers`` tokenizer; the
    builder reads its special tokens and writes it beside the graph for GenAI) as an ONNX Runtime
    GenAI folder with its KV cache, in ``precision`` (``fp32`` or ``int4``); ``threads`` fixes ONNX
    Runtime's intra-op threads in its ``genai_config.json`` (default: ONNX Runtime's own choice).

    int4: layers carrying netshrink's 4-bit group grids (``GPTQ(bits=4, group_size=G)``, not
    finalized) keep their own codes (``onnx_decoder_grids``); the others get the builder's
    round-to-nearest blocks. ``block_size`` (weights per 4-bit scale) is the grids' group size, else
    ``INT4_BLOCK``. Other parametrizations are baked in (a finalized copy is exported).

    The graph is checked before anything is written: the builder's fp32 graph runs on ``check_ids``
    ``(N, T)`` (default: one sequence of ``CHECK_TOKENS`` ids drawn with seed 0) and must match
    PyTorch within ``DECODER_TOLERANCE``; the int4 graph (computing in fp32) must match the model
    holding the weights its blocks dequantize to within ``INT4_TOLERANCE``, and every block holding
    a grid must dequantize to the model's fake-quantized weight. ``difference`` is the file's
    largest logit difference from ``model`` (with grids: the fake-quantized model; the builder's own
    blocks' quantization error is in it)."""
    from netshrink.quant.onnx_int4 import int4_grids, int4_reference

    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r}: give one of {', '.join(PRECISIONS)}")
    if not hasattr(tokenizer, "save_pretrained"):
        raise ConfigError("the KV-cache export needs the model's transformers tokenizer (the builder reads its "
                          "special tokens and writes it beside the graph)")
    grids = int4_grids(model) if precision == "int4" else {}
    block_size = _decoder_block(grids, block_size)
    plain = int4_reference(model, None)[0] if any(parametrize.is_parametrized(m) for m in model.modules()) \
        else model
    architecture = check_decoder_model(plain)
    folder = check_new_folder(folder)
    if check_ids is None:
        generator = torch.Generator().manual_seed(0)
        check_ids = torch.randint(0, model.config.vocab_size, (1, CHECK_TOKENS), generator=generator)
    made = [parent for parent in folder.parents if not parent.exists()]  # removed again if the export fails
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        difference = _build(model, plain, tokenizer, architecture, folder, precision, grids, block_size, check_ids,
                            threads)
    except BaseException:
        for parent in made:  # innermost first; a folder something else wrote into stays
            with contextlib.suppress(OSError):
                parent.rmdir()
        raise
    return DecoderExport(folder, precision, difference)


def _build(model: nn.Module, plain: nn.Module, tokenizer, architecture: str, folder: Path, precision: str,
           grids: dict, block_size: int, check_ids: torch.Tensor, threads: int | None) -> float:
    """The builder's runs and checks in a temporary folder beside ``folder``, renamed to it when
    every check passed; returns the file's difference from ``plain``."""
    from netshrink.quant.onnx_int4 import INT4_TOLERANCE

    with tempfile.TemporaryDirectory(prefix=".netshrink-decoder-", dir=folder.parent) as tmp:
        source, reference = Path(tmp) / "hf", Path(tmp) / "fp32"
        _write_hf_folder(plain, source, architecture, tokenizer)
        _run_builder(source, architecture, "fp32", reference)
        difference = check_decoder(reference, plain, check_ids)
        if not difference <= DECODER_TOLERANCE:
            raise ConfigError(f"the builder's graph differs from PyTorch by {difference:.3g} of the largest logit "
                              f"(tolerance {DECODER_TOLERANCE:g}); nothing was written")
        built = reference
        if precision == "int4":
            built = Path(tmp) / precision
            _run_builder(source, architecture, precision, built, block_size)
            _check_blocks(built / "model.onnx", block_size)
            _check_int4_graph(built, model, plain, grids, check_ids, INT4_TOLERANCE)
            difference = check_decoder(built, plain, check_ids)
        if threads is not None:
            set_decoder_threads(built, threads)
        if folder.exists():
            folder.rmdir()
        built.rename(folder)  # the whole folder appears at once, checked, or not at all
    return difference


def _decoder_block(grids: dict, block_size: int | None) -> int:
    """The 4-bit block: the grids' one group size, else ``block_size`` or ``INT4_BLOCK``."""
    sizes = {grid.group_size for grid in grids.values()}
    if len(sizes) > 1:
        raise ConfigError(f"the 4-bit grids have group sizes {sorted(sizes)}; the builder's blocks take one")
    if sizes and block_size is not None and block_size not in sizes:
        raise ConfigError(f"4-bit blocks of {block_size} weights, but the model's grids have groups of "
                          f"{next(iter(sizes))}")
    block = next(iter(sizes)) if sizes else INT4_BLOCK if block_size is None else block_size
    if block not in INT4_BLOCKS:
        raise ConfigError(f"4-bit blocks of {block} weights: the builder takes {', '.join(map(str, INT4_BLOCKS))}")
    return block


def _check_blocks(graph: Path, block_size: int) -> None:
    """The builder wrote ``MatMulNBits`` blocks of ``block_size`` (it ignores option names it does
    not know, so a renamed option would go unnoticed otherwise)."""
    import onnx

    proto = onnx.load(str(graph), load_external_data=False)
    sizes = {a.i for node in proto.graph.node if node.op_type == "MatMulNBits" for a in node.attribute
             if a.name == "block_size"}
    if sizes != {block_size}:
        raise ConfigError(f"the builder wrote 4-bit blocks of {sorted(sizes)} weights where {block_size} was asked; "
                          "nothing was written")


def _check_int4_graph(built: Path, model: nn.Module, plain: nn.Module, grids: dict, check_ids: torch.Tensor,
                      tolerance: float) -> None:
    """Place the grids' codes (``onnx_decoder_grids``), then run the graph computing in fp32
    (``accuracy_level`` 0, a copy beside it) against ``plain`` holding the weights its blocks hold."""
    import onnx

    from netshrink.core.modules import independent_copy
    from netshrink.quant.onnx_decoder_grids import graph_reference, place_grids

    graph = built / "model.onnx"
    placed = place_grids(graph, model, grids) if grids else set()
    proto = onnx.load(str(graph), load_external_data=False)
    for node in proto.graph.node:
        for attribute in node.attribute:
            if node.op_type == "MatMulNBits" and attribute.name == "accuracy_level":
                attribute.i = 0
    onnx.save(proto, str(built / "fp32_compute.onnx"))
    try:
        reference = graph_reference(graph, independent_copy(plain).eval())
        difference = check_decoder(built, reference, check_ids, graph="fp32_compute.onnx")
    finally:
        (built / "fp32_compute.onnx").unlink()
    for name in sorted(placed):  # the values: each placed block dequantizes to the fake-quantized weight
        held, expected = reference.get_submodule(name).weight.detach(), plain.get_submodule(name).weight.detach()
        if not torch.allclose(held, expected, rtol=0, atol=1e-6 * max(1.0, float(expected.abs().max()))):
            raise ConfigError(f"the 4-bit blocks of {name!r} do not hold its grid's weights; nothing was written")
    if not difference <= tolerance:
        raise ConfigError(f"the int4 graph differs from the weights its blocks hold by {difference:.3g} of the "
                          f"largest logit (tolerance {tolerance:g}); nothing was written")


def _run_builder(source: Path, architecture: str, precision: str, out: Path, block_size: int = INT4_BLOCK) -> None:
    """The builder's command line on the Hugging Face folder ``source``, writing ``out``."""
    command = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-m", architecture, "-i", str(source),
               "-o", str(out), "-p", precision, "-e", "cpu", "-c", str(source.parent / "cache")]
    if precision == "int4":
        command += ["--extra_options", f"block_size={block_size}"]  # 0.18 reads block_size, not int4_block_size
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        raise ConfigError(f"onnxruntime-genai's builder failed: {one_line(lines[-1] if lines else 'no output')}")


def _write_hf_folder(model: nn.Module, folder: Path, architecture: str, tokenizer) -> None:
    """The model's config and weights as a Hugging Face folder (a model dequantized from GGUF
    cannot ``save_pretrained`` itself, so the two are written directly)."""
    from safetensors.torch import save_model

    folder.mkdir(parents=True)
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    config["architectures"] = [architecture]
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    save_model(model, str(folder / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save_pretrained(folder)


def set_decoder_threads(folder: str | Path, threads: int) -> None:
    """Fix ONNX Runtime's intra-op threads in an exported folder's ``genai_config.json``."""
    path = Path(folder) / "genai_config.json"
    config = json.loads(path.read_text())
    config["model"]["decoder"].setdefault("session_options", {})["intra_op_num_threads"] = int(threads)
    path.write_text(json.dumps(config, indent=4))


def decoder_logits(folder: str | Path, input_ids: torch.Tensor, threads: int | None = None,
                   graph: str = "model.onnx", cached: int = 0) -> np.ndarray:
    """The exported model's logits ``(N, T, vocab)`` for ``input_ids`` ``(N, T)``, each row from an
    empty cache (plain ONNX Runtime on the builder's graph, or ``graph`` beside it): one forward, or
    with ``cached`` > 0 a forward of the first ``T - cached`` tokens and then each of the last
    ``cached`` tokens one at a time, reading the keys and values the step before wrote (the path
    generation takes)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(Path(folder) / graph), options, providers=["CPUExecutionProvider"])
    config = json.loads((Path(folder) / "genai_config.json").read_text())["model"]["decoder"]
    past_names = [i.name for i in session.get_inputs() if i.name.startswith("past_key_values")]
    present_names = [name.replace("past_key_values", "present") for name in past_names]
    empty = np.zeros((1, config["num_key_value_heads"], 0, config["head_size"]), np.float32)
    out = []
    for row in input_ids.to(torch.int64).numpy():
        length = len(row) - cached
        past, logits = dict.fromkeys(past_names, empty), []
        for start, end in [(0, length), *((t, t + 1) for t in range(length, len(row)))]:
            feed = {"input_ids": row[None, start:end], "attention_mask": np.ones((1, end), np.int64), **past}
            results = session.run(["logits", *present_names], feed)
            logits.append(results[0][0])
            past = dict(zip(past_names, results[1:], strict=True))
        out.append(np.concatenate(logits))
    return np.stack(out)


def check_decoder(folder: str | Path, model: nn.Module, input_ids: torch.Tensor, graph: str = "model.onnx") -> float:
    """The largest logit difference between the exported file and PyTorch on ``input_ids``,
    relative to the largest logit; the file's last ``CHECK_CACHED`` positions come from decoding
    steps through its KV cache."""
    with torch.no_grad():
        expected = model.eval()(input_ids=input_ids, use_cache=False).logits.numpy()
    actual = decoder_logits(folder, input_ids, graph=graph, cached=min(CHECK_CACHED, input_ids.shape[1] - 1))
    return float(np.abs(actual - expected).max() / max(1.0, np.abs(expected).max()))


def decoder_perplexity(folder: str | Path, windows: torch.Tensor) -> float:
    """Perplexity of the exported model on token ``windows`` ``(N, T)`` (next-token cross-entropy
    over each window, averaged over windows, then exponentiated, as the PyTorch figure is)."""
    logits = torch.from_numpy(decoder_logits(folder, windows))
    losses = [nn.functional.cross_entropy(row[:-1], window[1:]) for row, window in zip(logits, windows, strict=True)]
    return float(torch.stack(losses).mean().exp())
