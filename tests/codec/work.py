"""Work measured the same on a busy machine as on an idle one: calls made and memory allocated."""

import sys
import tracemalloc


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
