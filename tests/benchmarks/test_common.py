"""``benchmarks.common``: a pool worker does not outlive the benchmark that started it."""

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

WORKER = ("from benchmarks.common import exit_with_parent; exit_with_parent(0.05); print('armed', flush=True); "
          "import time; time.sleep(120)")
STARTER = f"""
import os, subprocess, sys
worker = subprocess.Popen([sys.executable, "-c", {WORKER!r}], cwd={str(ROOT)!r},
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
assert worker.stdout.readline().strip() == "armed"
print(worker.pid, flush=True)
os._exit(0)  # dies without waiting, as a killed benchmark does
"""


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_a_worker_ends_when_its_parent_dies():
    starter = subprocess.run([sys.executable, "-c", STARTER], cwd=ROOT, capture_output=True, text=True, check=True)
    pid = int(starter.stdout.split()[0])
    give_up = time.monotonic() + 60  # a hang guard only; the worker polls every 0.05 s
    while _running(pid) and time.monotonic() < give_up:
        time.sleep(0.05)
    still_running = _running(pid)
    if still_running:
        subprocess.run(["kill", str(pid)], check=False)
    assert not still_running
