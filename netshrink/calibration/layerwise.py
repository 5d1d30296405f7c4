"""Run a model block by block over calibration data, handing each layer's input statistics to a
solver, so that each block is calibrated on the outputs of the blocks already changed.

This is the sequential scheme of GPTQ (Frantar et al. 2022, section 4, "Step 3" of the reference
implementation's ``llama_sequential``), which SparseGPT and Wanda share: the model runs until the
first block, where a forward pre-hook records the block's inputs and stops the pass (the reference
code's ``Catcher``). Then, block after block, the recorded inputs run through the block with hooks
accumulating each chosen layer's ``LayerInputs``; the solver changes the block's layers; the block
runs again and its outputs become the next block's inputs. Memory holds one block's inputs for the
calibration set and the statistics of one block's layers.

Inside a block (or a model run as one block) the layers are solved in the order they run, as the
GPTQ reference code's ``--true-sequential`` does for LLaMA: consecutive layers that read the same
input tensor (a transformer's query, key and value; an MLP's gate and up projections) form one
group, solved together from one pass; each later group's statistics come from a pass over the
block with the groups before it already changed, so the output projection is calibrated on the
attention that the changed query, key and value give.

The blocks are the children of the ``nn.ModuleList`` / ``nn.Sequential`` holding most of the chosen
layers (a transformer's decoder layers, a CNN's stages), once one batch has shown that they run in
order, once each, each on its predecessor's output. A model with no such list is one block: its
layers are all solved together from one pass. Chosen layers outside the blocks are solved before
the blocks when they run before the first (then the first block's inputs are recorded again), else
after the blocks from one more pass of the whole model.

With ``reference=True`` (asymmetric calibration, ``hessian.asymmetric_target``) an unchanged copy
of each block (of the model, when it runs as one block) runs beside it on the original model's
block inputs, and each layer's statistics also pair its inputs with the inputs the original gave
it on the same batch. Layers outside the blocks get no reference. Both runs must take the same
layers on every batch (no data-dependent routing such as a mixture of experts); otherwise one line.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from netshrink.calibration.batches import model_device, run_calibration
from netshrink.calibration.hessian import LayerInputs
from netshrink.core.errors import ConfigError
from netshrink.core.model_io import Inputs, map_tensors

Solver = Callable[[dict[str, LayerInputs]], None]
"""``solve({layer name: its input statistics})``: change those layers (they are solved together)."""


class _Stop(Exception):
    """Raised by the pre-hook on the first block once it has recorded the block's inputs."""


@dataclass
class _Call:
    """One batch's call of a block: the positional and keyword inputs, and where among them the
    hidden state runs (a position in ``args``, or a keyword)."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    hidden: int | str

    def with_hidden(self, value: torch.Tensor) -> _Call:
        if isinstance(self.hidden, int):
            args = (*self.args[:self.hidden], value, *self.args[self.hidden + 1:])
            return _Call(args, self.kwargs, self.hidden)
        return _Call(self.args, {**self.kwargs, self.hidden: value}, self.hidden)

    def hidden_value(self) -> Any:
        return self.args[self.hidden] if isinstance(self.hidden, int) else self.kwargs[self.hidden]


def _call_of(args: tuple, kwargs: dict) -> _Call | None:
    """The call with its hidden state: the first positional input, else the keyword
    ``hidden_states``, else the first tensor keyword; None when no input is a tensor."""
    if args and isinstance(args[0], torch.Tensor):
        return _Call(args, kwargs, 0)
    key = "hidden_states" if "hidden_states" in kwargs else next(
        (k for k, v in kwargs.items() if isinstance(v, torch.Tensor)), None)
    return None if key is None else _Call(args, kwargs, key)


def _main(output: Any) -> Any:
    """A block's hidden output: the output, or the first item of a tuple / list."""
    return output[0] if isinstance(output, (tuple, list)) else output


def find_blocks(model: nn.Module, layers: Mapping[str, nn.Module], first_batch: Inputs) -> tuple[str, list[nn.Module]]:
    """``(name, blocks)``: the list of blocks to run in turn (see the module docstring), or
    ``("", [])`` when the model is to run as one block."""
    chosen = {id(m) for m in layers.values()}
    candidates = []
    for depth_name, container in model.named_modules():
        if isinstance(container, (nn.ModuleList, nn.Sequential)) and len(container) >= 2:
            inside = sum(1 for m in container.modules() if id(m) in chosen)
            if inside:
                candidates.append((-inside, depth_name.count("."), depth_name, container))
    if not candidates:
        return "", []
    _, _, name, container = min(candidates, key=lambda c: c[:2])
    return (name, list(container)) if _chained(model, list(container), first_batch) else ("", [])


def _chained(model: nn.Module, blocks: list[nn.Module], batch: Inputs) -> bool:
    """Whether on ``batch`` each block runs once, in order, the next one on the previous one's output."""
    seen: list[list[Any]] = []  # [block index, hidden input, hidden output] per call

    def before(index, module, args, kwargs):
        call = _call_of(args, kwargs)
        seen.append([index, None if call is None else call.hidden_value(), None])

    def after(index, module, args, kwargs, output):
        seen[-1][2] = _main(output)

    handles = [b.register_forward_pre_hook(lambda m, a, k, i=i: before(i, m, a, k), with_kwargs=True)
               for i, b in enumerate(blocks)]
    handles += [b.register_forward_hook(lambda m, a, k, o, i=i: after(i, m, a, k, o), with_kwargs=True)
                for i, b in enumerate(blocks)]
    try:
        run_calibration(model, batch, 0)
    finally:
        for handle in handles:
            handle.remove()
    return [i for i, _, _ in seen] == list(range(len(blocks))) and seen[0][1] is not None and all(
        seen[i + 1][1] is seen[i][2] for i in range(len(seen) - 1))


@contextmanager
def _calibrating(model: nn.Module):
    """Evaluation mode, no gradients and (for a Hugging Face model) no key-value cache, restored after."""
    config = getattr(model, "config", None)
    cache = getattr(config, "use_cache", None)
    was_training = model.training
    model.eval()
    if cache:
        config.use_cache = False
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)
        if cache:
            config.use_cache = cache


@contextmanager
def _recording(layers: Mapping[str, nn.Module], diagonal: bool):
    """``{name: LayerInputs}`` filled by forward pre-hooks on ``layers`` while the context lasts."""
    stats = {name: LayerInputs(module, diagonal) for name, module in layers.items()}
    handles = [module.register_forward_pre_hook(lambda m, args, name=name: stats[name].add(args[0]))
               for name, module in layers.items()]
    try:
        yield stats
    finally:
        for handle in handles:
            handle.remove()


def _solve(stats: dict[str, LayerInputs], solve: Solver, model: nn.Module) -> None:
    missing = [name for name, s in stats.items() if s.rows == 0]
    if missing:
        raise ConfigError(f"layer {missing[0]!r} of {type(model).__name__} never ran on the calibration data; leave "
                          "it out (layers= or filter_fn) or give data that reaches it")
    if stats:
        solve(stats)


def _record_first_block(model: nn.Module, first: nn.Module, batches: list[Inputs]) -> list[_Call]:
    calls: list[_Call] = []

    def stop(module, args, kwargs):
        call = _call_of(args, kwargs)
        if call is None:
            raise ConfigError(f"calibration batch {len(calls)} reaches the first block of {type(model).__name__} "
                              "without a tensor input, unlike batch 0; give batches of one kind")
        calls.append(call)
        raise _Stop

    handle = first.register_forward_pre_hook(stop, with_kwargs=True)
    try:
        for index, batch in enumerate(batches):
            try:
                run_calibration(model, batch, index, passing=(_Stop,))
            except _Stop:
                continue
            raise ConfigError(f"calibration batch {index} ran through {type(model).__name__} without reaching its "
                              "first block")
    finally:
        handle.remove()
    return calls


def layerwise(model: nn.Module, layers: Mapping[str, nn.Module], batches: list[Inputs], solve: Solver, *,
              diagonal: bool = False, reference: bool = False) -> str:
    """Calibrate ``layers`` of ``model`` block by block on ``batches`` (see the module docstring):
    ``solve`` gets each group of layers' ``LayerInputs`` (only their diagonals with ``diagonal``;
    with ``reference``, their ``cross`` with the original model's inputs too) and changes those
    layers before the model runs on. Returns the name of the block list used (``""``: the model
    ran as one block)."""
    with _calibrating(model):
        name, blocks = find_blocks(model, layers, batches[0])
        if not blocks:
            def runner(unit: nn.Module) -> Callable[..., None]:
                def run(index: int | None = None) -> None:
                    chosen = batches if index is None else batches[index:index + 1]
                    for i, batch in enumerate(chosen, start=index or 0):
                        run_calibration(unit, batch, i)
                return run

            twin = copy.deepcopy(model) if reference else None
            original = None if twin is None else _Original(twin, runner(twin), len(batches))
            _solve_in_order(layers, runner(model), solve, diagonal, model, original, model)
            return ""
        inside = {id(m) for block in blocks for m in block.modules()}
        outside = {n: m for n, m in layers.items() if id(m) not in inside}
        with _recording(outside, diagonal) as stats:
            calls = _record_first_block(model, blocks[0], batches)
        original_calls = calls if reference else None
        before = {n: s for n, s in stats.items() if s.rows}
        _solve(before, solve, model)
        if before:  # the first block's inputs change with the layers before it
            calls = _record_first_block(model, blocks[0], batches)
        for block in blocks:
            chosen = {n: m for n, m in layers.items() if n not in outside and any(m is b for b in block.modules())}
            # a block with no chosen layer stays as it is: it serves as its own original
            original = None if not reference else copy.deepcopy(block) if chosen else block
            calls = _run_block(block, calls, chosen, solve, diagonal, model,
                               None if original is None else (original, original_calls))
            if original is not None:
                original_calls = _block_outputs(original, original_calls)
        after = {n: m for n, m in outside.items() if n not in before}
        if after:
            with _recording(after, diagonal) as stats:
                for index, batch in enumerate(batches):
                    run_calibration(model, batch, index)
            _solve(stats, solve, model)
        return name


@dataclass
class _Original:
    """The unchanged copy of the unit being calibrated, ``run(index)`` running it on the original
    model's input ``index``, and how many inputs there are."""

    unit: nn.Module
    run: Callable[[int], Any]
    count: int


def _block_runner(block: nn.Module, calls: list[_Call]) -> Callable[..., list[Any]]:
    """``outputs(index=None)``: the block's hidden outputs on every call, or on call ``index`` alone."""
    device = model_device(block)

    def outputs(index: int | None = None) -> list[Any]:
        return [_main(block(*map_tensors(c.args, lambda t: t.to(device)),
                            **map_tensors(c.kwargs, lambda t: t.to(device))))
                for c in (calls if index is None else calls[index:index + 1])]

    return outputs


def _block_outputs(block: nn.Module, calls: list[_Call]) -> list[_Call]:
    """The next block's calls: ``calls`` with the block's hidden outputs on them."""
    return [call.with_hidden(output) for call, output in zip(calls, _block_runner(block, calls)(), strict=True)]


def _run_block(block: nn.Module, calls: list[_Call], layers: dict[str, nn.Module], solve: Solver, diagonal: bool,
               model: nn.Module, reference: tuple[nn.Module, list[_Call]] | None = None) -> list[_Call]:
    """Solve ``layers`` of ``block`` on its recorded inputs (beside ``reference``: the block's
    unchanged copy and the original model's calls of it); the block's outputs after that, as the
    next block's calls."""
    if layers:
        original = None if reference is None else _Original(reference[0], _block_runner(*reference), len(calls))
        _solve_in_order(layers, _block_runner(block, calls), solve, diagonal, model, original, block)
    return _block_outputs(block, calls)


def _in_running_order(layers: Mapping[str, nn.Module], run_first: Callable[[], None]) -> list[dict[str, nn.Module]]:
    """``layers`` in groups, in the order they run on one batch (``run_first``): consecutive layers
    reading the same input tensor share a group; layers that did not run form the last group."""
    order: list[tuple[str, Any]] = []  # (name, its input), holding the inputs so their ids stay theirs
    handles = [module.register_forward_pre_hook(lambda m, args, name=name: order.append((name, args[0])))
               for name, module in layers.items()]
    try:
        run_first()
    finally:
        for handle in handles:
            handle.remove()
    groups: list[dict[str, nn.Module]] = []
    placed: set[str] = set()
    last_input: Any = None
    for name, source in order:
        if name in placed:
            continue
        if groups and source is last_input:
            groups[-1][name] = layers[name]
        else:
            groups.append({name: layers[name]})
        placed.add(name)
        last_input = source
    unseen = {name: module for name, module in layers.items() if name not in placed}
    return groups + ([unseen] if unseen else [])


def _solve_in_order(layers: Mapping[str, nn.Module], run: Callable[..., Any], solve: Solver, diagonal: bool,
                    model: nn.Module, original: _Original | None = None, unit: nn.Module | None = None) -> None:
    """Solve ``layers`` group by group in running order (see the module docstring); ``run()`` runs
    every calibration input through ``unit``, the module holding them, ``run(0)`` the first only;
    ``original``, when given, is ``unit``'s unchanged copy (asymmetric calibration)."""
    for group in _in_running_order(layers, lambda: run(0)):
        if original is None:
            with _recording(group, diagonal) as stats:
                run()
        else:
            stats = _paired_statistics(group, run, original, unit, diagonal)
        _solve(stats, solve, model)


def _paired_statistics(group: Mapping[str, nn.Module], run: Callable[..., Any], original: _Original,
                       unit: nn.Module, diagonal: bool) -> dict[str, LayerInputs]:
    """``LayerInputs`` of ``group`` with ``cross``: input by input, the unchanged copy runs first and
    its layers' inputs wait beside the changed unit's, which then arrive at the same layers."""
    names = {id(m): n for n, m in unit.named_modules()}
    stats = {name: LayerInputs(module, diagonal) for name, module in group.items()}
    waiting: dict[str, list[torch.Tensor]] = {name: [] for name in group}
    handles = []
    for name, module in group.items():
        twin = original.unit.get_submodule(names[id(module)])
        handles.append(twin.register_forward_pre_hook(lambda m, args, name=name: waiting[name].append(args[0])))
        handles.append(module.register_forward_pre_hook(
            lambda m, args, name=name: stats[name].add(args[0], _paired(waiting[name], name))))
    try:
        for index in range(original.count):
            original.run(index)
            run(index)
            left = [name for name, inputs in waiting.items() if inputs]
            if left:  # data-dependent routing (a mixture of experts): the two runs took different layers
                raise ConfigError(f"layer {left[0]!r} ran more often in the original model than in the one being "
                                  f"changed on calibration batch {index}; asymmetric calibration needs both to run "
                                  "alike (no data-dependent routing)")
    finally:
        for handle in handles:
            handle.remove()
    return stats


def _paired(waiting: list[torch.Tensor], name: str) -> torch.Tensor:
    if not waiting:
        raise ConfigError(f"layer {name!r} ran more often in the model being changed than in its original; "
                          "asymmetric calibration needs both to run alike")
    return waiting.pop(0)
