"""The one thread pool of the codec, for work whose libraries release the GIL (file reads and
writes, ``crc.crc32``, numpy's array operations); one thread per CPU this process may use.

A forked child (a ``ProcessPoolExecutor`` worker, a DataLoader worker) gets a new pool on first
use: the parent's threads do not exist in it, and tasks sent to their queue would wait forever.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import torch


def threads() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@functools.cache
def pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(threads(), thread_name_prefix="netshrink-codec")


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run torch's operators on the calling thread alone for a while (``torch.set_num_threads``,
    restored after): for work on small arrays, such as deciding a tensor's encoding on a sample of
    65,536 values. torch splits such an array over its intra-op threads, and each operator then
    waits until every one of them has run; on a loaded machine that wait is a scheduling slice per
    operator (measured on the shared 2-core machine at a load average of 9: 120 SmolLM2-shaped
    tensors saved in 29 s at torch's 2 threads, 2.2 s at 1). The setting is the process's: torch
    work on other threads meanwhile runs on one thread too."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=pool.cache_clear)
