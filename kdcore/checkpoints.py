"""Atomic checkpoints with one previous generation kept.

``atomic_torch_save`` (``records.atomic_write``) writes a temp file, fsyncs it, moves the current checkpoint
to ``<name>.prev`` and renames the temp file into place (then fsyncs the folder).
A kill at any instant leaves the current or the previous checkpoint whole;
``load`` tries the current one, then the previous one, and reports what it
could not read instead of trusting it.

``save_run`` / ``resume_run``: the one checkpoint format of a training run, a
student's (``grid.py``) or a suite-trained teacher's (``teachers.py``): the run's
state (``StudentRun.state_dict``), the shared data-stream generator's state and
the fingerprint of the configuration it was made under, which a resume checks.
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from kdcore import records

KDBENCH_CHECKPOINT = "a PyTorch checkpoint saved by kdbench"


def atomic_torch_save(obj: Any, path: Path, keep_previous: bool = False) -> None:
    """``torch.save(obj)`` to ``path`` through ``records.atomic_write`` (whole or not at all, the umask's mode);
    ``keep_previous``: the file it replaces becomes ``<name>.prev``."""
    records.atomic_write(path, lambda f: torch.save(obj, f), keep_previous)


def what_is_there(path: Path) -> str:
    """What a file ``torch.load`` could not read holds, in a few words, for the message that says so: torch's
    own error text says where its parser stopped, not that the file was cut short (a kill, a full disk, a
    download that stopped). ``torch.save`` writes a zip archive (since torch 1.6; a pickle stream before)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as e:
        return f"a file this process cannot read ({e.strerror})"
    if size == 0:
        return "an empty file (0 bytes)"
    if head.startswith(b"PK\x03\x04"):
        if not zipfile.is_zipfile(path):  # no end-of-archive record: the end of the file is missing
            return f"a zip archive cut short ({size} bytes, no end-of-archive record): truncated"
        return f"a whole zip archive ({size} bytes) whose contents torch cannot read: corrupt, or not PyTorch's"
    if head.startswith(b"\x80"):  # pickle's PROTO opcode, what a legacy (pre-1.6) torch file starts with
        return f"a pickle stream ({size} bytes) that torch cannot read: a legacy torch file cut short or corrupt"
    return f"{size} bytes that are neither a zip archive nor a pickle stream (starting {head!r})"


class UnreadableCheckpoint(Exception):
    """A file ``torch.load`` cannot parse; the message names it, what was expected and what was found."""


def load_file(path: Path, expected: str, **load_options: Any) -> Any:
    """``torch.load(path, map_location="cpu", **load_options)``; a file it cannot parse (truncated, zeroed, another
    format) raises ``UnreadableCheckpoint``: "<path> is unreadable: expected <expected>, found <what_is_there>"."""
    try:
        return torch.load(path, map_location="cpu", **load_options)
    except Exception:
        raise UnreadableCheckpoint(f"{path} is unreadable: expected {expected}, found {what_is_there(Path(path))}") \
            from None


def generations(path: Path, log: Callable[[str], None] = print) -> Iterator[dict[str, Any]]:
    """The readable checkpoints at ``path``, newest first: the current one, then its ``.prev`` (each read
    when asked for); an unreadable one is reported through ``log`` and skipped."""
    path = Path(path)
    previous = path.with_name(path.name + ".prev")
    for candidate in (path, previous):
        if not candidate.exists():
            continue
        try:
            state = load_file(candidate, KDBENCH_CHECKPOINT, weights_only=False)
        except UnreadableCheckpoint as e:  # never trusted
            then = (f"trying {previous.name} instead" if candidate == path and previous.exists()
                    else "training starts over (no other readable checkpoint)")
            log(f"checkpoint {e}; ignoring it: {then}")
            continue
        yield state


def load(path: Path, log: Callable[[str], None] = print) -> dict[str, Any] | None:
    """The newest readable checkpoint at ``path`` (or its ``.prev``), else None."""
    return next(generations(path, log), None)


def save_run(path: Path, run: Any, data_generator: torch.Generator, fingerprint: str, **extra: Any) -> None:
    """Checkpoint ``run`` (a ``StudentRun``) and the data-stream RNG, made under ``fingerprint``."""
    atomic_torch_save({"run": run.state_dict(), "data_generator": data_generator.get_state(),
                       "fingerprint": fingerprint, **extra}, path, keep_previous=True)


def resume_run(path: Path, run: Any, fingerprint: str, name: str,
               log: Callable[[str], None] = print) -> torch.Tensor | None:
    """Restore ``run`` from the newest readable checkpoint ``save_run`` left at ``path`` (or its ``.prev``).

    Returns the data-stream generator state to continue from, or None to start over: no readable
    checkpoint, or one made under another fingerprint (never used). Logs ``<name>: resuming after
    epoch N``, or why it starts over.
    """
    state = load(path, log)
    if state is None:
        return None
    if state.get("fingerprint") != fingerprint:
        log(f"{name}: checkpoint made with another configuration; starting over")
        return None
    run.load_state_dict(state["run"])
    log(f"{name}: resuming after epoch {run.epochs_done}")
    return state["data_generator"]


def remove(path: Path) -> None:
    path = Path(path)
    for candidate in (path, path.with_name(path.name + ".prev")):
        candidate.unlink(missing_ok=True)
    remove_strays(path)


def remove_strays(path: Path) -> None:
    """The temp files a kill during an ``atomic_torch_save`` to ``path`` left (only its sole writer may call)."""
    path = Path(path)
    for stray in path.parent.glob(f".{path.name}.*.tmp"):
        stray.unlink(missing_ok=True)
