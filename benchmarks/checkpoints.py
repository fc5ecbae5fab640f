"""Atomic checkpoints with one previous generation kept.

``save`` writes a temp file, fsyncs it, moves the current checkpoint to
``<name>.prev`` and renames the temp file into place (then fsyncs the folder).
A kill at any instant leaves the current or the previous checkpoint whole;
``load`` tries the current one, then the previous one, and reports what it
could not read instead of trusting it.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_torch_save(obj: Any, path: Path, keep_previous: bool = False) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        if keep_previous and path.exists():
            os.replace(path, path.with_name(path.name + ".prev"))
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load(path: Path, log: Callable[[str], None] = print) -> dict[str, Any] | None:
    """The newest readable checkpoint at ``path`` (or its ``.prev``), else None."""
    path = Path(path)
    for candidate in (path, path.with_name(path.name + ".prev")):
        if not candidate.exists():
            continue
        try:
            return torch.load(candidate, map_location="cpu", weights_only=False)
        except Exception as e:  # truncated, zeroed, wrong format: never trusted
            log(f"checkpoint {candidate} is unreadable ({type(e).__name__}); ignoring it")
    return None


def remove(path: Path) -> None:
    path = Path(path)
    for candidate in (path, path.with_name(path.name + ".prev")):
        candidate.unlink(missing_ok=True)
    for stray in path.parent.glob(f".{path.name}.*.tmp"):  # left by a kill during a write
        stray.unlink(missing_ok=True)
