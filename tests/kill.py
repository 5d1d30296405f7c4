"""Kill a training process right after it checkpoints an epoch (for the exact-resume tests)."""

import signal
import subprocess
import time
from pathlib import Path

import pytest

from netshrink.core.errors import NetshrinkFormatError
from netshrink.train import load_checkpoint


def checkpoint_epoch(path: Path) -> int:
    """The last completed epoch in a checkpoint (0 while none is written)."""
    try:
        return load_checkpoint(path)[1]["epoch"]
    except NetshrinkFormatError:  # not written yet
        return 0


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    return info.st_ino, info.st_mtime_ns, info.st_size


def kill_after_epoch(proc: subprocess.Popen, checkpoint: Path, epoch: int, timeout_s: float) -> None:
    """SIGKILL ``proc`` once ``checkpoint`` holds ``epoch``; fail if it exits first or the checkpoint
    does not come within ``timeout_s`` (a hang guard, not a speed claim). Closes its stderr."""
    deadline = time.monotonic() + timeout_s
    seen, reached = None, 0
    try:
        while reached < epoch:
            stamp = _stamp(checkpoint)
            if stamp != seen:  # read the checkpoint only when it changed: polling stays cheap
                seen, reached = stamp, checkpoint_epoch(checkpoint)
                continue
            if proc.poll() is not None:
                pytest.fail(f"the process exited early: {proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"no epoch-{epoch} checkpoint within the timeout")
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
