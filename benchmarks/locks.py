"""Per-run and per-teacher locks, so several runner processes can share one results directory.

A lock is ``fcntl.flock`` on a small file beside what it guards. The kernel
drops it when the holding process dies, however it dies, so a lock left by a
killed runner is never stale: the next process simply takes it. The file
holds the holder's host and pid for humans; it is never deleted (deleting a
lock file another process has open would let two processes hold "the" lock).
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path


class FileLock:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self, blocking: bool = False) -> bool:
        """Take the lock; ``False`` if another live process holds it (and ``blocking`` is False)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}).encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "FileLock":
        self.acquire(blocking=True)
        return self

    def __exit__(self, *exc) -> None:
        self.release()
