"""Atomic file writes: write a temp file in the target folder, fsync it, then ``os.replace`` it onto
the final name, so a crash or interrupt mid-write never leaves a truncated file under that name
(the rename is atomic on POSIX within one filesystem, hence the temp file lives next to the target)."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator


@contextmanager
def atomic_open(path: str | Path) -> Iterator[BinaryIO]:
    """Binary file to write ``path`` through. On a clean exit of the ``with`` block the data is
    flushed, fsynced and renamed onto ``path``; on any exception (KeyboardInterrupt included) the
    temp file ``.<name>.*.tmp`` is removed and ``path`` is left as it was. Creates missing folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    # mkstemp creates 0600; give the file the mode a plain open() would (0666 less the umask), so
    # shipped weights and shared checkpoints stay readable by other users.
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_open`); returns ``path`` as a Path."""
    with atomic_open(path) as f:
        f.write(data)
    return Path(path)
