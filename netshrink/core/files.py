"""Atomic file writes: every file netshrink writes appears whole or not at all.

Policy: the data is ``fsync``-ed before the temporary file is renamed onto its path, so a crash
never leaves a truncated file where a complete one was (the rename itself is not ``fsync``-ed on
the folder: after a crash the path holds the old file or the new one).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def open_atomically(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file opened for writing (and reading back) on a temporary file in the same folder
    (creating missing parent folders); when the block ends it is flushed, fsync-ed and
    ``os.replace``-d onto ``path``. On any failure the temporary file is removed and a previous
    file at ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(temporary, 0o644)  # mkstemp makes it owner-only
        with os.fdopen(handle, "w+b") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def write_atomically(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (``open_atomically``)."""
    with open_atomically(path) as file:
        file.write(data)
