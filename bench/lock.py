"""One writer per run directory: an exclusive lock on ``<run_dir>/.lock`` held for the run's life.

The lock is an ``flock`` on an open file, so the kernel releases it when its process ends in any way
(kill -9 included): a lock left by a dead process is stale and simply taken over. The file holds
the holder's pid, host and start time, for the message a second launch prints. The file itself is
never deleted (deleting a lock file races with a process that has just opened it).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from pathlib import Path

from .record import now

LOCK = ".lock"


class RunLocked(RuntimeError):
    """Another live process holds the run directory."""


class RunLock:
    """``with RunLock(run_dir): ...`` — raises :class:`RunLocked` naming the holder when it is taken."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK
        self.fd: int | None = None
        self.stale: dict | None = None  # the record of a dead holder that was taken over

    def _holder(self) -> dict:
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, json.JSONDecodeError):
            return {}

    def acquire(self) -> RunLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            h = self._holder()
            raise RunLocked(
                f"{self.path.parent} is in use by pid {h.get('pid', '?')} on host {h.get('host', '?')} "
                f"(since {h.get('since', '?')}); wait for it to end, or stop that process"
            ) from None
        self.stale = self._holder() or None
        os.ftruncate(fd, 0)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": now()}
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
