"""Peak memory of each solo run and of the cohort: on CUDA ``torch.cuda.max_memory_allocated`` (taken by the
timed runs themselves), on the CPU the peak RSS increase of one subprocess per configuration (``--memory-probe``)."""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.grid import pick_device
from benchmarks.speed.harness import time_harness
from benchmarks.speed.options import SpeedOptions
from benchmarks.speed.setup import Setup, load_data, log

ROOT = Path(__file__).resolve().parents[2]  # the repository: where ``python -m benchmarks.speed`` runs


def _read_status(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])  # kB
    except OSError:
        return None
    return None


def memory_probe(options: SpeedOptions, config: str) -> dict[str, Any]:
    """In this (fresh) process: RSS increase of one configuration ("solo:METHOD" or "cohort")."""
    device = pick_device(options.device)
    setup = Setup(options, load_data(options), device)
    names = options.method_list if config == "cohort" else [config.split(":", 1)[1]]
    steps = max(2, min(3, options.warmup + options.steps))
    # one step at batch 2 first: the process's one-off growth (code pages, thread pools, allocator arenas)
    # lands in the baseline, not in the configuration's increase
    time_harness(setup, names, 0, 1, batch_size=2)
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        reset = True
    except OSError:
        reset = False
    base = _read_status("VmRSS")
    time_harness(setup, names, 0, steps)
    peak = _read_status("VmHWM") if reset else None
    if peak is None or base is None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux: an upper bound
        base = base or 0
    return {"config": config, "increase_mb": (peak - base) / 1024, "base_mb": base / 1024,
            "peak_mb": peak / 1024, "steps": steps, "vmhwm_reset": reset}


def measure_cpu_memory(options: SpeedOptions, argv: list[str]) -> dict[str, Any]:
    """One subprocess per configuration (each solo run, the cohort), two at a time (timing is not measured)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    configs = [f"solo:{m}" for m in options.method_list] + ["cohort"]
    pending = list(configs)
    running: list[tuple[str, subprocess.Popen]] = []
    out: dict[str, Any] = {}
    while pending or running:
        while pending and len(running) < 2:
            config = pending.pop(0)
            cmd = [sys.executable, "-m", "benchmarks.speed", *argv, "--memory-probe", config]
            running.append((config, subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                                     stderr=subprocess.PIPE, text=True)))
        config, proc = running.pop(0)
        stdout, stderr = proc.communicate()
        if proc.returncode != 0:
            log(f"memory probe {config} failed: {(stderr.strip().splitlines() or ['?'])[-1]}")
            out[config] = None
            continue
        out[config] = json.loads(stdout.strip().splitlines()[-1])
        log(f"memory {config}: +{out[config]['increase_mb']:.0f} MB RSS")
    return {c: out[c] for c in configs}


def peak_memory(options: SpeedOptions, argv: list[str], device,
                cuda_peak_mb: dict[str, Any]) -> dict[str, Any]:
    """The report's memory entry: the CUDA peaks the timed runs recorded (``cuda_peak_mb``: ``{"solo":
    {method: MB}, "cohort": MB}``), or on the CPU one probe subprocess per configuration (not with
    ``--no-memory``)."""
    if device.type == "cuda":
        return {"kind": "cuda", "solo": cuda_peak_mb["solo"], "cohort": cuda_peak_mb["cohort"],
                "note": "torch.cuda.max_memory_allocated (MB) during the run, data and teacher included."}
    if options.no_memory:
        return {"kind": "none", "solo": {}, "cohort": None, "note": "not measured (--no-memory)."}
    probes = measure_cpu_memory(options, argv)
    ok = all(v is not None for v in probes.values())
    return {"kind": "cpu-rss" if ok else "none",
            "solo": {m: probes[f"solo:{m}"]["increase_mb"] for m in options.method_list} if ok else {},
            "cohort": probes["cohort"]["increase_mb"] if ok else None, "probes": probes,
            "note": ("peak RSS increase (MB) of a subprocess per configuration over its RSS with the data "
                     "and the teacher loaded and one batch-2 step done (Linux VmHWM reset via "
                     f"/proc/self/clear_refs), {next(iter(probes.values()))['steps']} steps each." if ok else
                     "n/a on CPU: a memory subprocess failed (see the log).")}
