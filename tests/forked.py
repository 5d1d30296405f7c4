"""Run a test's training process by fork from the test process, which has already imported torch and
netshrink: a fresh interpreter pays torch's import (~2 s CPU) and ``torchrun`` a launcher on top, where
these tests check the distributed training and the resume, not the launcher (tests/train/test_ddp.py
keeps one run through the real ``torchrun``). Fork is safe here: torch runs one intra-op thread in the
tests (tests/conftest.py) and no process group is open in the test process. The child is a real
separate process (SIGKILL kills it for good) that never returns into pytest: it leaves by ``os._exit``
with the exit status the script would give (1 and the traceback on its stderr for an exception)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable

DIST_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _child(main: Callable[[], object], argv: list[str], env: dict[str, str], err) -> None:
    code = 1
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(err.fileno(), 2)
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - the child ends by os._exit
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        for key in DIST_KEYS:
            os.environ.pop(key, None)
        os.environ.update(env)
        sys.argv = ["forked", *argv]
        main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:  # noqa: BLE001 - what an uncaught exception does to a script
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


class Forked:
    """A forked child running ``main()`` with ``sys.argv[1:] == argv`` and ``env`` added to its
    environment (the distributed variables of the test process removed). Reads like
    ``subprocess.Popen``: ``poll``, ``wait``, ``send_signal``, ``kill``, ``returncode``; ``stderr``
    is a binary file holding what the child wrote there."""

    def __init__(self, main: Callable[[], object], argv: list[str], env: dict[str, str] | None = None) -> None:
        self._err = tempfile.TemporaryFile()
        sys.stdout.flush()
        sys.stderr.flush()
        self.pid = os.fork()
        if self.pid == 0:
            _child(main, argv, env or {}, self._err)
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"forked pid {self.pid}", timeout)
            time.sleep(0.01)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    @property
    def stderr(self):
        self._err.seek(0)
        return self._err

    def stderr_text(self) -> str:
        return self.stderr.read().decode(errors="replace")


def run_ranks(main: Callable[[], object], argv: list[str], timeout_s: float,
              world_size: int = 2) -> list[subprocess.CompletedProcess]:
    """Run ``main`` as ``world_size`` forked ranks of one gloo process group (the variables ``torchrun``
    sets); wait for all (killing any left at ``timeout_s``, a hang guard); each rank's exit status and
    stderr."""
    env = {"WORLD_SIZE": str(world_size), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    ranks = [Forked(main, argv, {**env, "RANK": str(r), "LOCAL_RANK": str(r)}) for r in range(world_size)]
    deadline = time.monotonic() + timeout_s
    try:
        for rank in ranks:
            rank.wait(max(0.0, deadline - time.monotonic()))
    finally:
        for rank in ranks:
            if rank.poll() is None:
                rank.kill()
                rank.wait()
    return [subprocess.CompletedProcess([f"rank {r}"], rank.returncode, "", rank.stderr_text())
            for r, rank in enumerate(ranks)]
