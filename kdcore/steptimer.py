"""An optional timer of the training step's parts, handed to ``train_cohort(step_timer=...)``.

The loop opens ``timer.section(part)`` around its own calls (the batch draw, the teacher forward, the
method's ``prepare``, the student forward, the fetch of extra samples, the method's losses, backward, the
optimizer step); without a timer it enters a shared ``nullcontext`` and computes exactly what it computes
with one. The end-of-epoch evaluation is in no part.

On CUDA each section records a pair of ``torch.cuda.Event(enable_timing=True)`` on the current stream and
nothing synchronises until ``seconds()`` (as airbench times its steps): a part's time is then the GPU time
between its two events. On the CPU it is ``time.perf_counter``. A section opened inside another counts for
the outer one only.
"""
from __future__ import annotations

import contextlib
import time
from typing import Iterator

import torch

__all__ = ["PARTS", "StepTimer", "section"]

PARTS = ["data", "teacher fwd", "prepare", "student fwd", "extra fetch", "losses", "backward", "optimizer"]

_UNTIMED = contextlib.nullcontext()  # reusable: what ``section`` enters without a timer


class StepTimer:
    """Seconds per part of the training step, summed over every section since the last ``reset``."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self._depth = 0
        self.reset()

    def reset(self) -> None:
        """Forget what was timed so far (the warm-up steps)."""
        self._seconds = {p: 0.0 for p in PARTS}
        self._events: list[tuple[str, torch.cuda.Event, torch.cuda.Event]] = []

    @contextlib.contextmanager
    def section(self, part: str) -> Iterator[None]:
        if part not in self._seconds:
            raise ValueError(f"unknown part {part!r}; the parts are {PARTS}")
        if self._depth:  # nested: the outer section counts it
            yield
            return
        self._depth += 1
        try:
            if self.cuda:
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record()
                try:
                    yield
                finally:
                    end.record()
                    self._events.append((part, start, end))
            else:
                t0 = time.perf_counter()
                try:
                    yield
                finally:
                    self._seconds[part] += time.perf_counter() - t0
        finally:
            self._depth -= 1

    def seconds(self) -> dict[str, float]:
        """Seconds per part (every part of ``PARTS``, 0 for one never entered); on CUDA this synchronises."""
        if self._events:
            torch.cuda.synchronize(self.device)
            for part, start, end in self._events:
                self._seconds[part] += start.elapsed_time(end) / 1000
            self._events = []
        return dict(self._seconds)


def section(timer: StepTimer | None, part: str):
    """``timer.section(part)``, or a no-op context without a timer."""
    return _UNTIMED if timer is None else timer.section(part)
