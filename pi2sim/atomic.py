"""Atomic file writes: a reader (or a killed run) sees the old file or the new one, never half.

Every file pi2sim writes goes through here: data is written to a temporary file in the same
directory, flushed and fsynced, then renamed over the destination (``os.replace`` is atomic on
POSIX within one filesystem).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def atomic_open(path: str | Path, durable: bool = True) -> Iterator[BinaryIO]:
    """Open a binary file for writing that appears at ``path`` only if the block completes.
    ``durable=False`` skips the fsyncs: still all-or-nothing for readers and killed runs, but a
    power cut may lose the file (for caches, whose loss costs only a recomputation)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    # mkstemp creates 0600; give the file the permissions an ordinary open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if not durable:
        return
    # Make the rename itself durable.
    with contextlib.suppress(OSError):
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def write_bytes(path: str | Path, data: bytes, durable: bool = True) -> None:
    with atomic_open(path, durable) as fh:
        fh.write(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))
