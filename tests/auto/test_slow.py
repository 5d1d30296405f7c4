"""Slow checks: worker processes give the search one process gives, and the report in a real browser."""

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from tests.auto.conftest import search


@pytest.mark.slow
def test_two_jobs_measure_and_train_what_one_does(searched, trained_mlp, tmp_path):
    one_out, one = searched  # the same search in one process
    two = search(trained_mlp, tmp_path / "two", jobs=2)
    tables = sorted((one_out / "search" / "table").glob("*.json"))
    assert tables and len(one.points) == len(two.points) == 3
    for path in tables:
        rows = json.loads(path.read_text())["rows"]
        assert json.loads((tmp_path / "two" / "search" / "table" / path.name).read_text())["rows"] == rows
    for a, b in zip(one.points, two.points, strict=True):
        assert (a["val_accuracy"], a["file_bytes"]) == (b["val_accuracy"], b["file_bytes"])
        assert open(a["model_file"], "rb").read() == open(b["model_file"], "rb").read()


def _ink(image: Image.Image) -> int:
    """Pixels that are not (nearly) white."""
    return int((np.asarray(image.convert("L")) < 240).sum())


@pytest.mark.slow
def test_the_report_renders_in_headless_chromium(searched, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    out, result = searched
    page = (out / "report.html").read_text()
    without = re.sub(r"<img [^>]*>", "", page)
    (tmp_path / "with.html").write_text(page)
    (tmp_path / "without.html").write_text(without)
    ink = {}
    for name in ("with", "without"):
        shot = tmp_path / f"{name}.png"
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        "--window-size=1100,3000", f"--screenshot={shot}", (tmp_path / f"{name}.html").as_uri()],
                       check=True, capture_output=True, timeout=120)
        ink[name] = _ink(Image.open(shot))
    assert ink["without"] > 0  # the text and tables show
    assert ink["with"] > 2 * ink["without"]  # and the two figures (front, allocation) decode and show
    assert f"point {result.chosen['index']}" in page


@pytest.mark.slow
def test_a_killed_search_resumes_with_its_finished_points(checkpoint_file, tmp_path, capsys):
    """The killed search is a separate process forked from this one (tests/forked.py: no second torch
    import), killed by SIGKILL; the resumed one runs the same command in this process."""
    import signal
    import sys
    import time

    from netshrink.cli import main
    from tests.auto.test_cli import SMALL
    from tests.forked import Forked

    argv = ["auto", str(checkpoint_file), "--data", "digits", "--builder", "tests.models:UserMLP", "--out",
            str(tmp_path), "--max-bytes", "6x", "--time", "10m", "--points", "3", *SMALL]
    process = Forked(lambda: sys.exit(main()), argv)
    first = tmp_path / "points" / "000.json"
    deadline = time.monotonic() + 120  # a hang guard, not a speed claim
    try:
        while not first.exists():
            assert process.poll() is None, process.stderr_text()[-2000:]
            assert time.monotonic() < deadline, "no point within the guard"
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        process.kill()
        process.wait()
    finished = json.loads(first.read_text())
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "point 0 (reused)" in out and "table: measured before (reused)" in out
    assert json.loads(first.read_text()) == finished
    assert (tmp_path / "model.nsk").exists() and len(json.loads((tmp_path / "result.json").read_text())["points"]) == 3
