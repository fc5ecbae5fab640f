"""Per-run and per-teacher locks, so several runner processes can share one results directory.

A lock is ``fcntl.flock`` on a small file beside what it guards. The kernel
drops it when the holding process dies, however it dies, so a lock left by a
killed runner is never stale: the next process simply takes it. The file
holds the holder's host and pid for humans.

The holder deletes the file as it releases the lock, so a finished grid leaves no
lock files behind (only a killed holder leaves one, which the next one takes and
deletes). Deleting it is safe because of how a lock is taken: a process that
opened the file and then got the flock checks that the path still names that
very file (same device and inode); if the holder deleted it in between, the
process holds a lock on a file nobody else can open any more, so it lets go
and tries again with whatever is at the path now. Two processes therefore never
both hold "the" lock: each holds the flock of the one file the path names.
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
        while True:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # 0o666 under the umask: a lock file a killed runner left stays openable by the group it writes for
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                os.close(fd)
                return False
            if self._names(fd):
                break
            os.close(fd)  # its holder deleted it after we opened it: lock the file now at the path
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}).encode())
        self._fd = fd
        return True

    def _names(self, fd: int) -> bool:
        """Whether ``self.path`` still names the file open as ``fd``."""
        try:
            at_path = os.stat(self.path)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (at_path.st_dev, at_path.st_ino) == (mine.st_dev, mine.st_ino)

    def release(self) -> None:
        if self._fd is not None:
            try:  # while still holding it: whoever opens the file from now on sees it gone (``acquire``)
                self.path.unlink()
            except OSError:  # gone already, or a folder we may not delete in: the file stays, harmless
                pass
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
