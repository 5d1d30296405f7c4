"""The one thread pool of the codec, for work whose libraries release the GIL (file reads and
writes, ``crc.crc32``, numpy's array operations); one thread per CPU this process may use.

A forked child (a ``ProcessPoolExecutor`` worker, a DataLoader worker) gets a new pool on first
use: the parent's threads do not exist in it, and tasks sent to their queue would wait forever.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor


def threads() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@functools.cache
def pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(threads(), thread_name_prefix="netshrink-codec")


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=pool.cache_clear)
