"""``finalize_``: the one hook that turns a model under training-time transforms into a plain one.

Every family trains through ``torch.nn.utils.parametrize`` parametrizations (masks, fake-quant,
tied centroids, signs). ``finalize_`` first runs the ``finalize`` part of each technique in the
model's log since the last ``finalize_`` (in log order; a structural change one makes goes through
``apply_`` so the log records it; today only ``Binarize`` has one, which makes stochastic signs
deterministic), then bakes every remaining parametrization into its plain tensor
(``remove_parametrizations(..., leave_parametrized=True)``: the Parameter objects survive, so
optimizers stay valid). Nothing is removed: a masked weight keeps its shape with exact zeros, and
``StructuredPrune`` cuts channels out when it runs. A model with nothing to finalize is returned
untouched, log included.
"""

from __future__ import annotations

import dataclasses

from torch import nn
from torch.nn.utils import parametrize

from netshrink.core.config import Config
from netshrink.core.registry import apply_, register, technique_of
from netshrink.core.transform_log import get_log

FINALIZE_VERB = "finalize"


@dataclasses.dataclass(frozen=True)
class Finalize(Config):
    """Config of ``finalize_`` (no options): logged so a file shows where training-time
    transforms were baked in."""


def _pending_verbs(model: nn.Module) -> list[str]:
    """Verbs logged since the last ``finalize`` record whose technique has a finalize part."""
    verbs: list[str] = []
    for record in get_log(model):
        verb = record.get("verb")
        if verb == FINALIZE_VERB:
            verbs = []
        elif verb not in verbs and (technique := technique_of(verb)) is not None and technique.finalize:
            verbs.append(verb)
    return verbs


def bake_parametrizations(model: nn.Module) -> list[str]:
    """Remove every parametrization, keeping its current value; returns ``module.tensor`` names."""
    baked = []
    for module_name, module in model.named_modules():
        if parametrize.is_parametrized(module):
            for tensor_name in list(module.parametrizations.keys()):
                parametrize.remove_parametrizations(module, tensor_name, leave_parametrized=True)
                baked.append(f"{module_name}.{tensor_name}" if module_name else tensor_name)
    return baked


def finalize_(model: nn.Module) -> nn.Module:
    """Run each logged technique's finalize part and bake training-time transforms in, so
    ``save`` can write the model. A no-op (nothing logged) for a model with nothing to finalize.

    Example:
        >>> prune_(model, MagnitudePrune(sparsity=0.9)); fit(...); finalize_(model); save(model, p)
    """
    if not _pending_verbs(model) and not any(parametrize.is_parametrized(m) for m in model.modules()):
        return model
    return apply_(model, Finalize())


@register(Finalize, FINALIZE_VERB, rebuild=None)
def _finalize(model: nn.Module, config: Finalize) -> dict:
    verbs = _pending_verbs(model)
    for verb in verbs:
        technique_of(verb).finalize(model)
    return {"finalized": verbs, "baked": bake_parametrizations(model)}
