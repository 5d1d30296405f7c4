"""A decoder LLM to ONNX with its KV cache, through onnxruntime-genai's model builder.

``export_decoder(model, folder, precision)`` writes a folder ONNX Runtime GenAI runs
(``model.onnx`` + its weights + ``genai_config.json``): one graph whose inputs are the new token
ids, the attention mask and the cached keys and values of every layer, and whose outputs are the
logits and the updated cache, so generating a token costs one token's forward, not the whole
context's. We do not write that graph by hand: the builder (``python -m
onnxruntime_genai.models.builder``, Microsoft's, shipped with ``onnxruntime-genai``) builds it with
``GroupQueryAttention`` over the cache, fused rotary embeddings and norms, and, for ``int4``, ONNX
Runtime's 4-bit ``MatMulNBits`` blocks (round-to-nearest, ``INT4_BLOCK`` weights per scale) for every
projection and the LM head.

The builder reads a Hugging Face folder, so the model (a ``*ForCausalLM`` of an architecture the
builder knows: ``BUILDER_ARCHITECTURES``) is written to a temporary one first: its config and its
weights (``safetensors``) and its tokenizer. The builder builds every layer from
the config, so a model whose layers no longer have the config's shapes (pruned per layer) is refused
in one line, as is anything the builder itself refuses.

``decoder_logits`` runs the exported file on a batch with an empty cache (one ONNX Runtime
forward), which ``check_decoder`` compares with PyTorch and ``decoder_perplexity`` scores.
"""

from __future__ import annotations

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
#: decoder-only LLMs whose weights are plain fp32 tensors)
BUILDER_ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM",
                         "Phi3ForCausalLM", "GemmaForCausalLM", "Gemma2ForCausalLM", "OlmoForCausalLM",
                         "GraniteForCausalLM", "NemotronForCausalLM")
#: ONNX Runtime's GroupQueryAttention kernel takes heads of a multiple of this many values
GQA_HEAD_MULTIPLE = 8
#: largest ONNX Runtime vs PyTorch logit difference accepted for an fp32 export, relative to the
#: largest logit (float32 sums in another order: measured 5e-6 on SmolLM2-135M and 1e-6 on a random
#: Llama of width 256; onnxruntime-genai 0.18's graph is wrong, 0.2-1.4 off, for widths or MLPs of 128
#: and less, which this check refuses)
DECODER_TOLERANCE = 1e-4
#: tokens of the default check sequence
CHECK_TOKENS = 16


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
    with torch.device("meta"):
        reference = type(model)(config)
    expected = {name: tuple(p.shape) for name, p in reference.state_dict().items()}
    for name, tensor in model.state_dict().items():
        if name in expected and tuple(tensor.shape) != expected[name]:
            raise ConfigError(f"layer {name!r} has shape {tuple(tensor.shape)} where the model's config says "
                              f"{expected[name]} (pruned per layer?); the KV-cache export builds every layer from "
                              "the config")
    return architectures[0]


def export_decoder(model: nn.Module, tokenizer, folder: str | Path, precision: str = "int4",
                   check_ids: torch.Tensor | None = None, threads: int | None = None,
                   block_size: int = INT4_BLOCK) -> DecoderExport:
    """``model`` (a Hugging Face causal LM) and its ``tokenizer`` (a ``transformers`` tokenizer; the
    builder reads its special tokens and writes it beside the graph for GenAI) as an ONNX Runtime
    GenAI folder with its KV cache, in ``precision`` (``fp32`` or ``int4``, ``block_size`` weights per
    4-bit scale); ``threads`` fixes ONNX
    Runtime's intra-op threads in its ``genai_config.json`` (default: ONNX Runtime's own choice).

    The graph is checked before anything is written: the builder's fp32 graph runs on ``check_ids``
    ``(N, T)`` (default: one sequence of ``CHECK_TOKENS`` ids drawn with seed 0) and must match
    PyTorch within ``DECODER_TOLERANCE``; an int4 file is then built from the same graph, and its
    difference (its quantization error) is reported."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r}: give one of {', '.join(PRECISIONS)}")
    if block_size not in INT4_BLOCKS:
        raise ConfigError(f"4-bit blocks of {block_size} weights: the builder takes {', '.join(map(str, INT4_BLOCKS))}")
    architecture = check_decoder_model(model)
    if not hasattr(tokenizer, "save_pretrained"):
        raise ConfigError("the KV-cache export needs the model's transformers tokenizer (the builder reads its "
                          "special tokens and writes it beside the graph)")
    if any(parametrize.is_parametrized(m) for m in model.modules()):
        raise ConfigError("the model still holds training-time parametrizations; finalize_ it before the KV-cache "
                          "export")
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ConfigError(f"{folder} already exists and is not an empty folder; give a new folder for the export")
    if check_ids is None:
        generator = torch.Generator().manual_seed(0)
        check_ids = torch.randint(0, model.config.vocab_size, (1, CHECK_TOKENS), generator=generator)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".netshrink-decoder-", dir=folder.parent) as tmp:
        source, reference = Path(tmp) / "hf", Path(tmp) / "fp32"
        _write_hf_folder(model, source, architecture, tokenizer)
        _run_builder(source, architecture, "fp32", reference)
        difference = check_decoder(reference, model, check_ids)
        if not difference <= DECODER_TOLERANCE:
            raise ConfigError(f"the builder's graph differs from PyTorch by {difference:.3g} of the largest logit "
                              f"(tolerance {DECODER_TOLERANCE:g}); nothing was written")
        built = reference
        if precision != "fp32":
            built = Path(tmp) / precision
            _run_builder(source, architecture, precision, built, block_size)
            difference = check_decoder(built, model, check_ids)
        if threads is not None:
            set_decoder_threads(built, threads)
        if folder.exists():
            folder.rmdir()
        built.rename(folder)  # the whole folder appears at once, checked, or not at all
    return DecoderExport(folder, precision, difference)


def _run_builder(source: Path, architecture: str, precision: str, out: Path, block_size: int = INT4_BLOCK) -> None:
    """The builder's command line on the Hugging Face folder ``source``, writing ``out``."""
    command = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-m", architecture, "-i", str(source),
               "-o", str(out), "-p", precision, "-e", "cpu", "-c", str(source.parent / "cache")]
    if precision == "int4":
        command += ["--extra_options", f"int4_block_size={block_size}"]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        if any("No module named onnxruntime_genai" in line for line in lines):
            raise ConfigError("the KV-cache export needs onnxruntime-genai: pip install onnxruntime-genai")
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


def decoder_logits(folder: str | Path, input_ids: torch.Tensor, threads: int | None = None) -> np.ndarray:
    """The exported model's logits ``(N, T, vocab)`` for ``input_ids`` ``(N, T)``, each row one
    forward from an empty cache (plain ONNX Runtime on the builder's graph)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(Path(folder) / "model.onnx"), options, providers=["CPUExecutionProvider"])
    config = json.loads((Path(folder) / "genai_config.json").read_text())["model"]["decoder"]
    empty = np.zeros((1, config["num_key_value_heads"], 0, config["head_size"]), np.float32)
    out = []
    for row in input_ids.to(torch.int64).numpy():
        feed = {"input_ids": row[None], "attention_mask": np.ones_like(row[None])}
        feed.update({i.name: empty for i in session.get_inputs() if i.name.startswith("past_key_values")})
        out.append(session.run(["logits"], feed)[0][0])
    return np.stack(out)


def check_decoder(folder: str | Path, model: nn.Module, input_ids: torch.Tensor) -> float:
    """The largest logit difference between the exported file and PyTorch on ``input_ids``,
    relative to the largest logit."""
    with torch.no_grad():
        expected = model.eval()(input_ids=input_ids, use_cache=False).logits.numpy()
    return float(np.abs(decoder_logits(folder, input_ids) - expected).max() / max(1.0, np.abs(expected).max()))


def decoder_perplexity(folder: str | Path, windows: torch.Tensor) -> float:
    """Perplexity of the exported model on token ``windows`` ``(N, T)`` (next-token cross-entropy
    over each window, averaged over windows, then exponentiated, as the PyTorch figure is)."""
    logits = torch.from_numpy(decoder_logits(folder, windows))
    losses = [nn.functional.cross_entropy(row[:-1], window[1:]) for row, window in zip(logits, windows, strict=True)]
    return float(torch.stack(losses).mean().exp())
