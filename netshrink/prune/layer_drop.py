"""Fewer layers: remove whole encoder or decoder layers of a Hugging Face transformer.

``prune_(model, LayerDrop(every_other=True))`` keeps layers 0, 2, 4, ... as DistilBERT initializes
its student from every other teacher layer (Sanh et al. 2019, sec. 3, "Student initialization");
``LayerDrop(layers=(3, 5))`` removes the layers named. The layer stack is the ``nn.ModuleList`` whose
every entry holds an attention block (``transformer_blocks``); the config's ``num_hidden_layers``
(which Llama's forward slices the stack by) and ``layer_types`` shrink with it, and every
``layer_idx`` attribute (the KV cache's slot) is renumbered. Recovering the accuracy, by label-free
distillation from the original, is a separate step (fine-tuning after this one).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from netshrink.core.config import Config
from netshrink.core.errors import ConfigError, NetshrinkFormatError
from netshrink.core.registry import register
from netshrink.prune.transformer_blocks import attention_blocks
from netshrink.prune.verb import prune_


@dataclasses.dataclass(frozen=True)
class LayerDrop(Config):
    """Remove whole transformer layers.

    Args:
        layers: indices of the layers to remove (0 is the first).
        every_other: remove layers 1, 3, 5, ... (DistilBERT's student keeps every other layer).

    Example:
        >>> prune_(bert, LayerDrop(every_other=True)); distill(bert, teacher, data)
    """

    layers: tuple[int, ...] = ()
    every_other: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.every_other, bool):
            raise ConfigError(f"every_other must be true or false, got {self.every_other!r}")
        if not isinstance(self.layers, (tuple, list)) or not all(
                isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in self.layers):
            raise ConfigError(f"layers must be layer indices (0, 1, ...), got {self.layers!r}")
        object.__setattr__(self, "layers", tuple(sorted(set(self.layers))))
        if bool(self.layers) == self.every_other:
            raise ConfigError("give either layers=(indices to remove) or every_other=True")


def layer_stack(model: nn.Module) -> tuple[str, nn.ModuleList] | None:
    """The name and ``nn.ModuleList`` of the model's transformer layers (each entry holds an
    attention block), or None."""
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) and all(attention_blocks(m) for m in module):
            return name, module
    return None


def _configs(model: nn.Module) -> list[Any]:
    """Every distinct Hugging Face config object the model's modules hold."""
    found: dict[int, Any] = {}
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "num_hidden_layers"):
            found[id(config)] = config
    return list(found.values())


def keep_layers_(model: nn.Module, stack_name: str, kept: list[int]) -> None:
    """Keep only the layers ``kept`` (sorted indices) of the stack ``stack_name``."""
    stack = model.get_submodule(stack_name)
    total = len(stack)
    layers = [stack[i] for i in kept]
    owner_name, _, attribute = stack_name.rpartition(".")
    owner = model.get_submodule(owner_name) if owner_name else model
    setattr(owner, attribute, nn.ModuleList(layers))
    for new_index, layer in enumerate(layers):
        for module in layer.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = new_index
    for config in _configs(model):
        if config.num_hidden_layers == total:
            config.num_hidden_layers = len(kept)
            types = getattr(config, "layer_types", None)
            if isinstance(types, (list, tuple)) and len(types) == total:
                config.layer_types = [types[i] for i in kept]


def _rebuild(model: nn.Module, record: dict[str, Any]) -> None:
    keep_layers_(model, record["stack"], list(record["kept"]))


def _check(model: nn.Module, record: dict[str, Any]) -> None:
    """The logged stack is the model's layer stack and the kept indices are distinct, sorted and in it."""
    found = layer_stack(model)
    stack = record.get("stack")
    if found is None or stack != found[0]:
        raise NetshrinkFormatError(f"names layer stack {str(stack)[:80]!r}, but the model's is "
                                   f"{None if found is None else found[0]!r}")
    kept = record.get("kept")
    total = len(found[1])
    if not isinstance(kept, list) or not kept or any(not isinstance(i, int) or isinstance(i, bool) for i in kept) \
            or kept != sorted(set(kept)) or kept[0] < 0 or kept[-1] >= total:
        raise NetshrinkFormatError(f"kept must be distinct increasing layer indices below {total}, "
                                   f"got {str(kept)[:60]}")


@register(LayerDrop, "layer_drop", rebuild=_rebuild, check=_check, structural=True, verb=prune_)
def _layer_drop(model: nn.Module, config: LayerDrop) -> dict:
    found = layer_stack(model)
    if found is None:
        raise ConfigError(f"{type(model).__name__} has no stack of transformer layers (an nn.ModuleList of "
                          "BERT- or Llama-style layers) to drop layers from")
    name, stack = found
    total = len(stack)
    drop = set(range(1, total, 2)) if config.every_other else set(config.layers)
    if max(drop, default=-1) >= total:
        raise ConfigError(f"layers names layer {max(drop)}, but {type(model).__name__} has {total} layers "
                          f"(0-{total - 1})")
    kept = [i for i in range(total) if i not in drop]
    if not kept or not drop:
        raise ConfigError(f"dropping {sorted(drop)} of {total} layers leaves {len(kept)}; keep at least one and "
                          "remove at least one")
    keep_layers_(model, name, kept)
    return {"stack": name, "kept": kept, "layers": total}
