"""Crash-safe file writes shared by the model store and the audio store."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

__all__ = ["atomic_write"]


def atomic_write(path: Path, chunks: bytes | Iterable[bytes]) -> None:
    """Write ``path`` all-or-nothing: temp file in the same folder, fsync, rename, fsync folder.

    Raises:
        OSError: the write failed (the temporary file is removed; ``path`` is untouched).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; the dialler runs as another user
        with os.fdopen(fd, "wb") as handle:
            for chunk in [chunks] if isinstance(chunks, bytes) else chunks:
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
