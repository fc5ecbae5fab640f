"""Fault injection for the durability tests; production code carries no hook.

    python tests/kill_hook.py N[:SUFFIX] MODULE [ARGS...]

runs ``python -m MODULE ARGS...`` in this process after patching
``kdcore.checkpoints.atomic_torch_save`` so that the process's N-th
write (of files named ``*SUFFIX`` only, when given) dies by SIGKILL halfway: the temp file is left half-written
beside the current checkpoint (and its ``.prev``), untouched, as a real kill in
the middle of the write would leave them. Works under torchrun too (each rank
counts its own writes).
"""
from __future__ import annotations

import os
import runpy
import signal
import sys
import tempfile
from pathlib import Path


def kill_in_checkpoint_write(n: int, suffix: str = "") -> None:
    """Make the ``n``-th ``atomic_torch_save`` of this process (to a file named ``*suffix``) die in the middle
    of its write."""
    import torch

    from kdcore import checkpoints

    real = checkpoints.atomic_torch_save
    writes = 0

    def dying_save(obj, path, keep_previous: bool = False):
        nonlocal writes
        writes += Path(path).name.endswith(suffix)
        if writes != n or not Path(path).name.endswith(suffix):
            return real(obj, path, keep_previous)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # as the real one
        os.close(fd)
        torch.save(obj, tmp)
        with open(tmp, "rb+") as f:
            f.truncate(os.path.getsize(tmp) // 2)
            os.fsync(f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)

    checkpoints.atomic_torch_save = dying_save


if __name__ == "__main__":
    count, _, name_suffix = sys.argv[1].partition(":")
    kill_in_checkpoint_write(int(count), name_suffix)
    module = sys.argv[2]
    sys.argv = [module, *sys.argv[3:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
