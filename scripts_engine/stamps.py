"""A counter the processes of one state folder share: the server processes of ``serve
--workers N`` and the command line.

It lives in a small file that each process maps into its memory, so reading it costs a
memory read (about 0.3 us), not a system call. A change of API keys (a revocation, a new
signing secret) bumps it; each server process's key cache reads it on every request and
forgets what it had verified when it moved. A revocation through the API in any server process,
or through ``scripts-engine keys revoke``, then takes effect at once in every server process on
this machine; between machines ``auth_cache_s`` still bounds it.

Where the file cannot be made or mapped (a read-only state folder), the counter reads 0
forever and bumps change nothing: the caches then fall back on their time limit.
"""

from __future__ import annotations

import fcntl
import logging
import mmap
import os
from pathlib import Path

log = logging.getLogger(__name__)

_SIZE = 8


class Stamp:
    """A shared 64-bit counter in the file ``path`` (created on first use)."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None
        self._map: mmap.mmap | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            with _locked(self._fd):
                if os.fstat(self._fd).st_size < _SIZE:
                    os.ftruncate(self._fd, _SIZE)
            self._map = mmap.mmap(self._fd, _SIZE)
        except OSError as exc:
            log.warning("no shared key stamp at %s (%s): key caches keep their time limit",
                        path, exc)  # fmt: skip
            self.close()

    def value(self) -> int:
        """The counter now (0 where there is no file)."""
        if self._map is None:
            return 0
        return int.from_bytes(self._map[:_SIZE], "little")

    def bump(self) -> None:
        """Move the counter on (under a lock on the file: no bump is lost)."""
        if self._map is None or self._fd is None:
            return
        with _locked(self._fd):
            self._map[:_SIZE] = ((self.value() + 1) % 2**64).to_bytes(_SIZE, "little")

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class _locked:
    """An exclusive lock on an open file, for a ``with`` block."""

    def __init__(self, fd: int):
        self.fd = fd

    def __enter__(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *_exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)


def key_stamp(state_dir: Path) -> Stamp:
    """The stamp of API key changes for the processes of this state folder."""
    return Stamp(state_dir / "keys.stamp")
