"""What GPTQ, SparseGPT and Wanda share around their per-layer solvers: the calibration data they
need, the layers they act on, the block-by-block run, and all-or-nothing changes.

``solve_layers`` checks that the config carries calibration data, chooses the layers
(``hessian.solvable_layers``: the config's ``layers`` or ``filter_fn``), runs each layer's check
before anything runs, then ``layerwise`` with ``solve_layer`` on each group of layers. A solver
writes its new values into the layer's stored weight right away (the blocks after it then run on
them, which is the point of the sequential scheme) and returns an ``install`` step that puts its
parametrization on (a grid, a mask) once every layer is solved. If anything fails, every chosen
layer gets its stored weight back and nothing is installed, so a refused run leaves the model as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from netshrink.calibration.batches import calibration_batches
from netshrink.calibration.hessian import LayerInputs, asymmetric_target, solvable_layers
from netshrink.calibration.layerwise import layerwise
from netshrink.core.errors import ConfigError

LayerSolver = Callable[[str, nn.Module, LayerInputs], tuple[dict[str, Any], Callable[[], None]]]
"""``solve_layer(name, layer, inputs) -> (log details, install)``."""


def stored_weight(module: nn.Module) -> torch.Tensor:
    """The tensor holding a layer's weight: the original under parametrizations, else the weight."""
    return module.parametrizations["weight"].original if parametrize.is_parametrized(module, "weight") \
        else module.weight


def solve_layers(model: nn.Module, config: Any, solve_layer: LayerSolver, check_layer: Callable[[str, nn.Module], None],
                 diagonal: bool = False, reference: bool = False) -> dict[str, Any]:
    """Run ``solve_layer`` on every chosen layer block by block (see the module docstring);
    ``config`` has ``layers``, ``filter_fn``, ``calibration_data`` and ``batch_size``; ``reference``:
    the statistics carry the original model's inputs too (``layerwise``'s asymmetric calibration).
    Returns the log details ``{"layers": {name: details}, "blocks": block list name}``."""
    # checked here, not in the config: a config read back from a log never has its unlogged data
    if config.calibration_data is None:
        raise ConfigError(f"{type(config).__name__} needs calibration_data: a few batches of the model's inputs "
                          "(e.g. 128 token sequences, or data.val.x[:512])")
    layers = solvable_layers(model, config.layers, config.filter_fn)
    if not layers:
        raise ConfigError(f"nothing for {type(config).__name__} in {type(model).__name__}: no Linear or Conv layer "
                          "passes the filter; check filter_fn or layers")
    for name, module in layers.items():
        check_layer(name, module)
    batches = calibration_batches(config.calibration_data, config.batch_size)
    saved = {name: stored_weight(module).detach().clone() for name, module in layers.items()}
    details, installs = {}, []

    def solve(stats: dict[str, LayerInputs]) -> None:
        for name, inputs in stats.items():
            details[name], install = solve_layer(name, layers[name], inputs)
            installs.append(install)

    try:
        blocks = layerwise(model, layers, batches, solve, diagonal=diagonal, reference=reference)
    except BaseException:
        with torch.no_grad():
            for name, module in layers.items():
                stored_weight(module).copy_(saved[name])
        raise
    for install in installs:
        install()
    return {"layers": details, "blocks": blocks}


def row_groups(module: nn.Module) -> list[slice]:
    """The output rows of each input group of ``module`` (one slice, or one per group of a grouped
    convolution), matching ``LayerInputs``' Hessians by index."""
    groups = getattr(module, "groups", 1)
    per_group = module.weight.shape[0] // groups
    return [slice(g * per_group, (g + 1) * per_group) for g in range(groups)]


def solve_row_groups(module: nn.Module, inputs: LayerInputs, prior: torch.Tensor | None,
                     solve_rows: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None],
                                          tuple[torch.Tensor, Any, float]],
                     damp: float = 0.0) -> tuple[list[Any], float]:
    """Solve ``module``'s weight one input group at a time (``row_groups``: a grouped convolution's
    groups each have their own Hessian): ``solve_rows(rows, hessian, prior_rows) -> (new rows, what
    else the solver made, loss)`` on the flattened weight's rows and the matching rows of ``prior`` (an
    earlier pruning mask, or None). When the inputs carry the original model's (``inputs.cross``),
    the rows handed over are ``hessian.asymmetric_target``'s, dampened by ``damp`` (the loss is then
    measured from those rows). The new rows are written into the stored weight; returns what else
    each group's solve made, in group order, and the summed loss."""
    weight = module.weight.detach().flatten(1)
    solved, made, loss = [], [], 0.0
    for g, rows in enumerate(row_groups(module)):
        prior_rows = None if prior is None else prior.flatten(1)[rows]
        start = weight[rows] if inputs.cross is None else \
            asymmetric_target(weight[rows], inputs.hessian[g], inputs.cross[g], damp)
        new, extra, part = solve_rows(start, inputs.hessian[g], prior_rows)
        solved.append(new)
        made.append(extra)
        loss += part
    write_weight(module, torch.cat(solved))
    return made, loss


def refuse_other_parametrizations(name: str, module: nn.Module, what: str) -> None:
    """A one-line ConfigError when the layer's weight carries a parametrization other than a
    pruning mask (a grid, shared centroids): ``what`` writes the stored weight, which would then
    not be what the layer computes with."""
    if parametrize.is_parametrized(module, "weight"):
        other = [type(p).__name__ for p in module.parametrizations["weight"] if type(p).__name__ != "Mask"]
        if other:
            raise ConfigError(f"layer {name!r} already carries {other[0]}; call finalize_(model) before {what}")


def write_weight(module: nn.Module, values: torch.Tensor) -> None:
    """Put ``values`` (the layer's weight, any shape with as many elements) into its stored weight."""
    stored = stored_weight(module)
    with torch.no_grad():
        stored.copy_(values.reshape(stored.shape).to(stored.dtype))
