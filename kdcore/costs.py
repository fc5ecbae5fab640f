"""What a run costs in memory, counted exactly where it can be, measured where it cannot.

Counted (any device): the bytes of the student's parameters, of the method's own modules' parameters,
of the optimizers' state (SGD's momentum buffers, which exist after the first step) and of the buffers
(BN statistics, CRD's memory banks). Measured: on CUDA, the peak allocated memory during each of a
run's steps (``cuda_step_peak``); on the CPU, the process's peak resident set size over one cohort
(``reset_peak_rss`` / ``peak_rss_mb``), which all the cohort's runs share, so it is reported per cohort.
"""
from __future__ import annotations

import resource
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

import torch

MB = 2**20


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the tensors' elements (each tensor counted once)."""
    seen: set[int] = set()
    total = 0
    for t in tensors:
        if isinstance(t, torch.Tensor) and id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


def optimizer_state_bytes(optimizers: Iterable[torch.optim.Optimizer]) -> int:
    """Bytes of the tensors the optimizers keep per parameter (``optimizer.state``: momentum buffers)."""
    return tensor_bytes(v for opt in optimizers for state in opt.state.values() for v in state.values())


@contextmanager
def cuda_step_peak(peaks: dict[str, int], device: torch.device) -> Iterator[None]:
    """On CUDA, around one step: ``peaks["peak"]`` becomes the max of itself and the step's peak allocated
    memory, ``peaks["step"]`` the max of itself and that peak less what was allocated when the step began
    (the step's own activations, gradients and temporaries). Elsewhere: nothing."""
    if device.type != "cuda":
        yield
        return
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    yield
    peak = torch.cuda.max_memory_allocated(device)
    peaks["peak"] = max(peaks.get("peak", 0), peak)
    peaks["step"] = max(peaks.get("step", 0), peak - base)


def reset_peak_rss(clear_refs: Path = Path("/proc/self/clear_refs")) -> bool:
    """Reset the process's peak RSS (Linux: ``5`` to ``/proc/self/clear_refs``); False where that is refused,
    and the peak then counts from the process's start."""
    try:
        clear_refs.write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb(status: Path = Path("/proc/self/status")) -> float:
    """The process's peak RSS in MiB since the last reset (Linux ``VmHWM``), else since it started."""
    try:
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
