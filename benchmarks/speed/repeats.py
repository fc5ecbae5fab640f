"""The interleaved measurements: every repeat times the plain loop and the solo run of every method, the
cohort and the shared part, in a cycle rotated by a fraction of its length per repeat (plain/solo swapped
on odd repeats), so load from other processes hits all candidates alike."""
from __future__ import annotations

from typing import Any

from benchmarks.speed.harness import time_harness, time_shared
from benchmarks.speed.plain import time_plain
from benchmarks.speed.setup import Setup, log


def warm_up(setup: Setup) -> None:
    """The first steps of a process are slow (lazy initialisation, kernel selection): one untimed pass of
    every code path (the cohort of all methods, the plain loop) before any measurement."""
    time_harness(setup, setup.options.method_list, 0, 2)
    time_plain(setup, setup.options.method_list[0], 0, 1)


def measure(setup: Setup) -> dict[str, Any]:
    """Seconds of every configuration in every repeat: ``{"plain": {m: [s]}, "solo": {m: [s]}, "cohort": [s],
    "shared": [{"data": s, "teacher": s}], "cuda_peak_mb": {"solo": {m: MB}, "cohort": MB},
    "plain_needs": {m: needs}}``."""
    options = setup.options
    raw: dict[str, Any] = {"plain": {m: [] for m in options.method_list}, "solo": {m: [] for m in options.method_list},
                           "cohort": [], "shared": [], "cuda_peak_mb": {"solo": {}, "cohort": None},
                           "plain_needs": {}}
    B, S = options.batch_size, options.steps
    cycle = [[("plain", m), ("solo", m)] for m in options.method_list] + [[("cohort", None), ("shared", None)]]
    for rep in range(options.repeats):
        # a cyclic schedule, rotated by a fraction of a cycle per repeat (the cohort lands at another place
        # each time, never twice in a row) and plain/solo swapped on odd repeats
        shift = (rep * len(cycle)) // options.repeats
        schedule = [item for group in cycle[shift:] + cycle[:shift]
                    for item in (reversed(group) if rep % 2 else group)]
        for kind, m in schedule:
            if kind == "shared":
                res = time_shared(setup, options.warmup, options.steps)
                raw["shared"].append(res)
                log(f"  repeat {rep + 1}/{options.repeats} shared (batch {1000 * res['data'] / S:.0f} ms + teacher "
                    f"forward {1000 * res['teacher'] / S:.0f} ms per step)")
                continue
            if kind == "plain":
                res = time_plain(setup, m, options.warmup, options.steps)
                raw["plain_needs"][m] = res["needs"]
                n = 1
            else:
                res = time_harness(setup, options.method_list if kind == "cohort" else [m], options.warmup,
                                   options.steps)
                n = len(options.method_list) if kind == "cohort" else 1
                if "peak_mb" in res:
                    peaks = raw["cuda_peak_mb"]
                    if kind == "cohort":
                        peaks["cohort"] = max(peaks["cohort"] or 0, res["peak_mb"])
                    else:
                        peaks["solo"][m] = max(peaks["solo"].get(m, 0), res["peak_mb"])
            (raw["cohort"] if kind == "cohort" else raw[kind][m]).append(res["seconds"])
            log(f"  repeat {rep + 1}/{options.repeats} {kind:6s} {m or '(all)':10s} "
                f"{B * S * n / res['seconds']:8.1f} img/s")
    return raw
