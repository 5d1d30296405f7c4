"""Work measured the same on a busy machine as on an idle one: calls made and memory allocated
(Python and numpy heap through tracemalloc, torch tensors through a dispatch mode)."""

import sys
import tracemalloc

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


def operations(call) -> int:
    """Python and C function calls ``call()`` makes (``sys.setprofile`` events). A decoder looping
    once per symbol in Python makes hundreds of thousands; a load of a small valid file about ten
    thousand."""
    events = 0

    def count(frame, event, arg):
        nonlocal events
        events += 1

    sys.setprofile(count)
    try:
        call()
    finally:
        sys.setprofile(None)
    return events


def bounded(call, limit_bytes=64 * 2 ** 20):
    """Run ``call``; assert its Python/numpy heap peak stays under ``limit_bytes``."""
    tracemalloc.start()
    try:
        try:
            result = call()
        finally:
            peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < limit_bytes, f"peak {peak} bytes"
    return result


class _TorchAllocations(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not any(ret.alias_info is not None for ret in func._schema.returns):
            self.total += sum(t.numel() * t.element_size() for t in tree_leaves(out)
                              if isinstance(t, torch.Tensor) and t.device.type != "meta")
        return out


def torch_allocated(call) -> int:
    """Bytes of the CPU tensors torch ops make while ``call()`` runs (summed, freed ones included;
    tensors on the meta device cost nothing)."""
    counter = _TorchAllocations()
    with counter:
        call()
    return counter.total


# imports are in no measurement: entering the first dispatch mode imports torch._dynamo, and the
# first meta-device decomposition (``arange`` in a rebuilder) imports sympy
with _TorchAllocations(), torch.device("meta"):
    torch.arange(3)


class TorchOps(TorchDispatchMode):
    """Records ``(op, dtype, numel)`` of every new tensor the torch ops in the block make (views
    and in-place results are not new)."""

    def __init__(self):
        super().__init__()
        self.outputs = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not any(ret.alias_info is not None for ret in func._schema.returns):
            self.outputs += [(str(func), t.dtype, t.numel()) for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        return out
