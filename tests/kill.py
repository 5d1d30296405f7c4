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


def kill_after_epoch(proc: subprocess.Popen, checkpoint: Path, epoch: int, timeout_s: float) -> None:
    """SIGKILL ``proc`` once ``checkpoint`` holds ``epoch``; fail if it exits first or the checkpoint
    does not come within ``timeout_s`` (a hang guard, not a speed claim). Closes its stderr."""
    deadline = time.monotonic() + timeout_s
    try:
        while checkpoint_epoch(checkpoint) < epoch:
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
