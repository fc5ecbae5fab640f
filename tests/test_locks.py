"""Locks (``benchmarks/locks.py``): one holder at a time, across processes; the holder deletes the lock file as
it lets go, so a clean run leaves none, and deleting it never lets two processes hold the lock."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import locks
from benchmarks.locks import FileLock
from benchmarks.run import main

ROOT = Path(__file__).resolve().parents[1]


def test_one_holder_and_the_file_goes_with_the_last_release(tmp_path):
    path = tmp_path / "sub" / "x.lock"
    a, b = FileLock(path), FileLock(path)
    assert a.acquire() and a.held and path.is_file()
    assert not b.acquire() and not b.held  # flock: two opens of one file conflict, within a process too
    a.release()
    assert not path.exists() and not a.held
    assert b.acquire() and path.is_file()
    b.release()
    assert not path.exists()
    with FileLock(path) as c:
        assert c.held and path.is_file()
    assert not path.exists()


def test_a_lock_on_a_file_deleted_meanwhile_is_let_go_and_taken_again(tmp_path, monkeypatch):
    """The race deletion opens: B opens the file, A (the holder) deletes it and lets go, B gets the flock of a
    file no longer at the path. B must notice and lock the file now at the path, or a third process C would
    create a new file and hold "the" lock beside B."""
    path = tmp_path / "x.lock"
    a, b = FileLock(path), FileLock(path)
    assert a.acquire()
    real_open, opened = os.open, []

    def open_then_holder_releases(file, flags, mode=0o777):
        fd = real_open(file, flags, mode)
        opened.append(os.fstat(fd).st_ino)
        if a.held:
            a.release()  # between B's open and B's flock
        return fd

    monkeypatch.setattr(locks.os, "open", open_then_holder_releases)
    assert b.acquire(blocking=True)
    monkeypatch.undo()
    assert len(opened) == 2  # the deleted file, then the one at the path
    assert os.fstat(b._fd).st_ino == os.stat(path).st_ino == opened[1]
    assert not FileLock(path).acquire()  # C: refused, B holds the path's file
    b.release()
    assert not path.exists()


COUNTER = """
import sys, time
sys.path.insert(0, {root!r})
from pathlib import Path
from benchmarks.locks import FileLock
lock, counter = FileLock({lock!r}), Path({counter!r})
for _ in range({n}):
    with lock:
        value = int(counter.read_text())
        time.sleep(0.001)  # widen the window in which a second holder would lose an increment
        counter.write_text(str(value + 1))
"""


def test_processes_taking_turns_never_hold_it_together(tmp_path):
    """Read-sleep-write increments under the lock from 4 processes: any overlap loses one. Each release
    deletes the file while the others wait on it or are about to open it."""
    counter = tmp_path / "counter"
    counter.write_text("0")
    code = COUNTER.format(root=str(ROOT), lock=str(tmp_path / "c.lock"), counter=str(counter), n=60)
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    assert counter.read_text() == "240"
    assert not (tmp_path / "c.lock").exists()


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_a_lock_file_a_killed_holder_leaves_follows_the_umask(tmp_path, umask):
    """Left behind, it must stay openable (read-write) by the group a results folder is shared with."""
    old = os.umask(umask)
    try:
        lock = FileLock(tmp_path / "x.lock")
        assert lock.acquire()
        assert (tmp_path / "x.lock").stat().st_mode & 0o777 == 0o666 & ~umask
        lock.release()
    finally:
        os.umask(old)


def test_a_clean_grid_leaves_no_lock_file(tmp_path, capsys):
    """grid.lock, report.lock, the runs' and the teacher's locks: each deleted by its holder."""
    argv = ["--methods", "vanilla,kd", "--pairs", "resnet8:resnet8", "--seeds", "0", "--epochs", "1",
            "--set", "teacher_train.epochs=1", "--results", str(tmp_path), "--quiet"]
    assert main(argv) == 0, capsys.readouterr().err
    assert (tmp_path / "teachers" / "digits").is_dir() and list(tmp_path.glob("*/report.md"))
    assert sorted(tmp_path.rglob("*.lock")) == []
