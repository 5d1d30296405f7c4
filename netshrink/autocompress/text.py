"""``auto`` on a Hugging Face text encoder (``"minilm"`` or ``"hf:PATH"``): no labels, so fidelity
to the original stands in for accuracy.

- Fidelity: the mean cosine between each passage's sentence embedding (``models.pretrained.
  sentence_embedding`` of the last hidden state) from the compressed model and from the original;
  a point's ``val_accuracy`` is that mean on the validation passages (the original's is 1.0), so
  ``Budget.max_drop`` counts points of 100 x cosine (2.0: cosine >= 0.98).
- The text: ``{"text": FILE}`` (one passage a line, ``data.read_text``), split once (seed 0)
  into calibration and validation passages written to ``OUT/text/``; or ``{"text": FILE,
  "validation": FILE}`` already split. The recipes calibrate on the calibration passages; the
  validation passages only verify. There is no test split to read.
- The space (``TextSpace``), per layer: every ``nn.Linear`` kept, int8 per output channel, or
  GPTQ (Frantar et al. 2022; ``quant.gptq``) at 4 or 3 bits with one grid per group of 128
  input columns (the largest power of two that divides the layer's when 128 does not); every
  ``nn.Embedding`` kept, 8 bits per row or 4 bits per group, round to nearest with MSE clipping
  (there are no inputs to weigh an embedding's rows by). GPTQ, not round-to-nearest, for the
  Linear groups: on all-MiniLM-L6-v2, 4-bit groups of 128 kept a cosine of 0.983 by GPTQ and
  0.940 by round-to-nearest (``benchmarks/results/transformers.json``, evaluation passages).
- Sensitivity: one layer changed at a time, 1 - mean cosine on calibration passages (the table's
  ``kl`` column; ``accuracy`` holds the cosine): GPTQ calibrates on the first ``samples`` passages
  and the cosine is measured on the next ``samples`` (held out from it, when the text has that
  many), since GPTQ fits the passages it calibrates on and would look better there than on any
  other text. Costs: each changed tensor's bytes in the encoding ``save`` gives it (``codec``
  ``group_int`` for grids), less the original's.

Every point is a pretrained-model recipe (``[model] pretrained``, ``[data] text``; stages
``quantize`` and ``gptq``, no training) that ``netshrink run`` reproduces.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import random
from pathlib import Path
from typing import Any

import torch
from torch import nn

from netshrink.autocompress.choices import KEEP, Choice
from netshrink.core.errors import ConfigError

TEXT_FOLDER = "text"
VAL_FRACTION = 0.2
MAX_LENGTH = 128
BATCH = 16
#: layer kinds a text encoder's search changes
KINDS = (nn.Linear, nn.Embedding)


@dataclasses.dataclass(frozen=True)
class TextSpace:
    """The candidates of a text encoder's layers.

    Args:
        bits: ``nn.Linear`` settings: 8 is int8 per output channel; fewer bits are GPTQ groups.
        embedding_bits: ``nn.Embedding`` settings: 8 is 8 bits per row; fewer are groups.
        group_size: weights per group (a power of two; a layer it does not divide takes the
            largest power of two that does).
    """

    bits: tuple[int, ...] = (8, 4, 3)
    embedding_bits: tuple[int, ...] = (8, 4)
    group_size: int = 128

    def __post_init__(self) -> None:
        for name in ("bits", "embedding_bits"):
            values = tuple(getattr(self, name))
            if any(isinstance(b, bool) or not isinstance(b, int) or not 2 <= b <= 8 for b in values):
                raise ConfigError(f"{name} are integers from 2 to 8, got {list(values)}")
            object.__setattr__(self, name, values)
        size = self.group_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1 or size & (size - 1):
            raise ConfigError(f"group_size must be a power of two, got {size!r}")

    def choice(self, bits: int) -> Choice:
        return Choice(values="int", bits=bits, group=None if bits == 8 else self.group_size)

    def choices(self, kind: str = "bytes") -> list[Choice]:
        """Every candidate of any layer, ``KEEP`` first (``applies`` says which a layer takes)."""
        return [KEEP] + [self.choice(b) for b in sorted(set(self.bits) | set(self.embedding_bits), reverse=True)]

    def applies(self, module: nn.Module, choice: Choice) -> bool:
        bits = self.embedding_bits if isinstance(module, nn.Embedding) else self.bits
        return choice == KEEP or (choice.bits in bits and choice == self.choice(choice.bits))


def layer_group(columns: int, group_size: int) -> int:
    """``group_size`` where it divides ``columns``, else the largest power of two that does."""
    group = group_size
    while columns % group:
        group //= 2
    return group


def is_text_model(spec: Any) -> bool:
    """Whether ``spec`` names a pretrained text model (``models.pretrained``)."""
    from netshrink.models.pretrained import PACKAGED

    return isinstance(spec, str) and (spec in PACKAGED or spec.startswith("hf:"))


def model_table(spec: str) -> dict[str, str]:
    """The recipes' ``[model]`` table (an ``hf:`` folder made absolute); an encoder only."""
    if spec == "smollm2":
        raise ConfigError("auto searches text encoders (minilm, hf:PATH of an encoder); smollm2 is a language "
                          "model, not searched yet")
    return {"pretrained": f"hf:{Path(spec[3:]).expanduser().resolve()}" if spec.startswith("hf:") else spec}


def data_tables(data: Any, out: Path) -> tuple[dict[str, Any], str, dict[Path, bytes]]:
    """The recipes' ``[data]`` table (calibration ``text``, ``max_length``), the validation
    text's path, and the files to write for them, from ``data``: a text file, or ``{"text",
    "validation", "val_fraction", "max_length"}``. Without ``validation`` the file's passages are
    split once (seed 0) into ``OUT/text/calibration.txt`` and ``validation.txt``."""
    from netshrink.data.text import read_passages

    table = {"text": data} if isinstance(data, (str, os.PathLike)) else data
    if not isinstance(table, dict) or not isinstance(table.get("text"), (str, os.PathLike)):
        raise ConfigError("a text encoder's data is its text: a .txt file (one passage a line) or "
                          "{'text': FILE, 'validation': FILE}")
    unknown = set(table) - {"text", "validation", "val_fraction", "max_length"}
    if unknown:
        raise ConfigError(f"unknown text data key(s) {sorted(unknown)}; give text, validation, val_fraction, "
                          "max_length")
    length = table.get("max_length", MAX_LENGTH)
    if isinstance(length, bool) or not isinstance(length, int) or length < 2:
        raise ConfigError(f"max_length must be an integer >= 2 tokens, got {length!r}")
    recipe = {"text": str(Path(table["text"]).resolve()), "max_length": length}
    if table.get("validation") is not None:
        read_passages(table["validation"])  # refuses a missing or empty file in one line
        read_passages(table["text"])
        return recipe, str(Path(table["validation"]).resolve()), {}
    fraction = table.get("val_fraction", VAL_FRACTION)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise ConfigError(f"val_fraction must be in (0, 1), got {fraction!r}")
    passages = read_passages(table["text"])
    if len(passages) < 2:
        raise ConfigError(f"the text {table['text']} holds {len(passages)} passage; give at least 2 (calibration "
                          "and validation)")
    order = list(range(len(passages)))
    random.Random(0).shuffle(order)
    held = max(1, round(fraction * len(passages)))
    folder = out / TEXT_FOLDER
    files = {folder / name: ("\n".join(passages[i] for i in indices) + "\n").encode()
             for name, indices in (("validation.txt", sorted(order[:held])), ("calibration.txt", sorted(order[held:])))}
    return {**recipe, "text": str(folder / "calibration.txt")}, str(folder / "validation.txt"), files


@torch.no_grad()
def embeddings(model: nn.Module, inputs: dict[str, torch.Tensor], batch: int = BATCH) -> torch.Tensor:
    """Sentence embeddings ``(N, width)``: the masked mean of the last hidden state, normalised."""
    from netshrink.models.pretrained import sentence_embedding

    found = []
    for start in range(0, inputs["input_ids"].shape[0], batch):
        part = {k: v[start:start + batch] for k, v in inputs.items()}
        hidden = model(**part, output_hidden_states=True).hidden_states[-1]
        found.append(sentence_embedding(hidden.float(), part["attention_mask"]))
    return torch.cat(found)


def cosine(reference: torch.Tensor, found: torch.Tensor) -> float:
    """Mean cosine of normalised embeddings."""
    return float((reference * found).sum(-1).mean())


@dataclasses.dataclass
class TextTask:
    """What a text encoder's search needs beyond ``table.Context``: its space, its layers, the
    validation passages and the original's embeddings of them, and the calibration passages the
    sensitivities are measured on (``probe``; ``Context.reference`` holds the original's
    embeddings of them)."""

    space: TextSpace
    modules: dict[str, nn.Module]
    validation: dict[str, torch.Tensor]
    probe: dict[str, torch.Tensor] | None = None
    _reference: torch.Tensor | None = None

    def applies(self, layer: str, choice: Choice) -> bool:
        return self.space.applies(self.modules[layer], choice)

    def cheapest(self, layers: list[str]) -> dict[str, Choice]:
        """Every layer at its fewest bits (the least any allocation reaches)."""
        return {layer: min((c for c in self.space.choices() if c != KEEP and self.applies(layer, c)),
                           key=lambda c: c.bits, default=KEEP) for layer in layers}

    def stages(self, allocation: dict[str, Choice]) -> list[dict[str, Any]]:
        """The recipe stages applying ``allocation``: embeddings per row or group (round to
        nearest, MSE clipping), int8 Linear layers per channel, then GPTQ per (bits, group), fewest
        bits last, so each GPTQ stage calibrates on the layers quantized before it."""
        stages = []
        by_setting: dict[tuple, list[str]] = {}
        for layer, choice in allocation.items():
            if choice == KEEP:
                continue
            module = self.modules[layer]
            embedding = isinstance(module, nn.Embedding)
            group = layer_group(module.weight.shape[1], choice.group) if choice.group else None
            by_setting.setdefault((not embedding, group is not None and not embedding, -choice.bits, group or 0),
                                  []).append(layer)
        for (linear, gptq, negative_bits, group), layers in sorted(by_setting.items()):
            bits = -negative_bits
            if gptq:
                stages.append({"verb": "gptq", "config": {"bits": bits, "group_size": group, "act_order": True,
                                                          "layers": layers, "batch_size": BATCH}})
                continue
            config: dict[str, Any] = {"bits": dict.fromkeys(layers, bits)}
            if not linear:
                config.update(scheme="affine", calibration="mse")
            config.update(granularity="group", group_size=group) if group else config.update(granularity="channel")
            stages.append({"verb": "quantize", "config": config})
        if not stages:  # every layer kept: the original itself (a recipe has at least one stage)
            stages.append({"verb": "magnitude_prune", "config": {"sparsity": 0.0}})
        return stages

    def reference(self, model: nn.Module) -> torch.Tensor:
        if self._reference is None:
            self._reference = embeddings(model, self.validation)
        return self._reference

    def fidelity(self, original: nn.Module, model_file: str) -> float:
        """A point's mean cosine to the original on the validation passages, from its file."""
        from netshrink.codec.container import load

        model = load(model_file, model=copy.deepcopy(original)).eval()
        return cosine(self.reference(original), embeddings(model, self.validation))


def text_context(setting: Any) -> Any:
    """The ``table.Context`` of a text encoder's search (``setting``: ``table.Setting``): the
    first ``samples`` calibration passages as ``x``, their original embeddings as ``reference``."""
    from netshrink.autocompress.table import Context, encoded_bytes
    from netshrink.data.text import read_text
    from netshrink.models.pretrained import load_pretrained

    model_spec = dict(setting.model_table)["pretrained"]
    data = dict(setting.data_table)
    loaded = load_pretrained(model_spec)
    model = loaded.model.eval()
    calibration = read_text(data["text"], loaded.tokenizer, max_length=data["max_length"])
    x = {k: v[:setting.samples] for k, v in calibration.items()}
    held_out = calibration["input_ids"].shape[0] > setting.samples
    probe = {k: v[setting.samples:2 * setting.samples] for k, v in calibration.items()} if held_out else x
    validation = read_text(data["validation"], loaded.tokenizer, max_length=data["max_length"])
    modules = {name: m for name, m in model.named_modules() if isinstance(m, KINDS)}
    task = TextTask(setting.space, modules, validation, probe)
    sizes = {name: encoded_bytes(t, effort="default") for name, t in model.state_dict().items()}
    return Context(model, None, x, None, embeddings(model, probe), 1.0, "bytes", sizes, 0, 0.0, task)


def layers(model: nn.Module) -> list[str]:
    """The layers a text encoder's search changes: every Linear and Embedding, in model order."""
    return [name for name, module in model.named_modules() if isinstance(module, KINDS)]


def measure_choice(ctx: Any, layer: str, choice: Choice) -> dict[str, Any]:
    """One row of a text encoder's table: ``choice`` on ``layer`` alone, on calibration passages."""
    from netshrink.autocompress.table import apply_allocation, changed_bytes

    trial = apply_allocation(ctx, {layer: choice})
    found = cosine(ctx.reference, embeddings(trial, ctx.text.probe))
    return {"choice": choice.to_dict(), "kl": max(1.0 - found, 0.0), "accuracy": found,
            "cost": changed_bytes(ctx, trial, choice)}
