"""Timing kdbench's own loop, ``train_cohort``: a cohort of one (solo) or of all methods, and the part a
cohort does once for all its students (the batch and the teacher forward)."""
from __future__ import annotations

import time
from typing import Any

import torch

from methods import method_needs

from kdcore.steptimer import StepTimer
from kdcore.train import seed_for, teacher_outputs, train_cohort
from kdcore.recipe import Recipe
from benchmarks.speed.setup import Setup, StepLimited, sync


def harness_kwargs(fast: dict[str, Any]) -> dict[str, Any]:
    """``train_cohort`` keyword arguments for the resolved fast-path flags (``FastPaths.resolve``).

    The harness (solo and cohort) runs with these; the plain loop always runs fp32, NCHW, eager, with its
    teacher under ``no_grad`` (the RepDistiller way).
    """
    return {"fast": dict(fast)}


def time_harness(setup: Setup, method_names: list[str], warmup: int, steps: int,
                 batch_size: int | None = None, timer: StepTimer | None = None) -> dict[str, Any]:
    """Seconds for ``steps`` steps (after ``warmup``) of ``method_names`` as one cohort.

    ``timer``: handed to ``train_cohort`` (``step_timer``), which times the step's parts (``--breakdown``);
    it is reset after the warm-up steps.
    """
    device = setup.device
    recipe = None if batch_size is None else Recipe(epochs=1, batch_size=batch_size, lr_decay_epochs=[])
    runs = setup.runs(method_names, recipe)
    stamps: list[float] = []

    def on_step():
        sync(device)
        stamps.append(time.perf_counter())
        if timer is not None and len(stamps) == warmup:
            timer.reset()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    t0 = time.perf_counter()
    train_cohort(runs, StepLimited(setup.data, warmup + steps), device, teacher=setup.teacher,
                 data_generator=torch.Generator().manual_seed(seed_for(setup.options.seed, "data")),
                 on_step=on_step, step_timer=timer, **harness_kwargs(setup.fast))
    failed = {r.run_id: f"{type(r.error).__name__}: {r.error}" for r in runs if r.error is not None}
    if failed:
        raise RuntimeError(f"harness run failed: {failed}")
    if len(stamps) != warmup + steps:
        raise RuntimeError(f"harness ran {len(stamps)} steps, expected {warmup + steps} (dataset too small?)")
    start = stamps[warmup - 1] if warmup else t0
    out = {"seconds": stamps[-1] - start}
    if device.type == "cuda":
        out["peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def time_shared(setup: Setup, warmup: int, steps: int) -> dict[str, Any]:
    """Seconds for ``steps`` batches (after ``warmup``) of what a cohort does once for all its students:
    draw and augment the batch, and (``teacher``) run the teacher on it, as ``train_cohort`` does
    (same fast paths, same ``no_grad``/``inference_mode`` and clone). No student, no method.

    Returns ``{"data": s, "teacher": s}`` where ``teacher`` excludes the data time.
    """
    device, fast = setup.device, setup.fast
    teacher = setup.teacher
    if fast["channels_last"]:
        teacher.to(memory_format=torch.channels_last)
    preact = any(method_needs(m, "needs_preact") for m in setup.options.method_list)  # as train_cohort decides it
    batches = setup.data.epoch_batches(setup.options.batch_size,
                                       torch.Generator().manual_seed(seed_for(setup.options.seed, "data")), device)
    data_s = teacher_s = 0.0
    for i in range(warmup + steps):
        sync(device)
        t0 = time.perf_counter()
        x = next(batches)[0]
        if fast["channels_last"]:
            x = x.contiguous(memory_format=torch.channels_last)
        sync(device)
        t1 = time.perf_counter()
        teacher_outputs(teacher, x, device, fast, preact)
        sync(device)
        t2 = time.perf_counter()
        if i >= warmup:
            data_s += t1 - t0
            teacher_s += t2 - t1
    return {"data": data_s, "teacher": teacher_s}
