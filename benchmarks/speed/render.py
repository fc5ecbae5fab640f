"""The report: medians over the repeats (``summarise``), what sharing alone can give (``cohort_bound``), the
printed table (``render``) and the environment it names (``cpu_model``)."""
from __future__ import annotations

import platform
import statistics
from pathlib import Path
from typing import Any

from tabulate import tabulate

from methods import method_needs

from benchmarks.speed.options import SpeedOptions

TARGETS = {"cohort_over_solo": 2.0, "solo_over_plain": 1.0}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def fmt(v: float | None, digits: int = 1) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def summarise(options: SpeedOptions, raw: dict[str, Any]) -> dict[str, Any]:
    """Medians over the repeats of the throughputs and of the per-repeat ratios."""
    B, S = options.batch_size, options.steps
    methods = options.method_list
    M = len(methods)
    rows = {}
    for m in methods:
        plain = [B * S / t for t in raw["plain"][m]]
        solo = [B * S / t for t in raw["solo"][m]]
        rows[m] = {"plain_img_s": statistics.median(plain), "solo_img_s": statistics.median(solo),
                   "solo_over_plain": statistics.median([s / p for s, p in zip(solo, plain)])}
    reps = range(len(raw["cohort"]))
    plain_all = [B * S * M / sum(raw["plain"][m][r] for m in methods) for r in reps]
    solo_all = [B * S * M / sum(raw["solo"][m][r] for m in methods) for r in reps]
    cohort = [B * S * M / raw["cohort"][r] for r in reps]
    overall = {
        "plain_img_s": statistics.median(plain_all),
        "solo_img_s": statistics.median(solo_all),
        "cohort_img_s": statistics.median(cohort),
        "solo_over_plain": statistics.median([s / p for s, p in zip(solo_all, plain_all)]),
        "cohort_over_solo": statistics.median([c / s for c, s in zip(cohort, solo_all)]),
        "cohort_over_plain": statistics.median([c / p for c, p in zip(cohort, plain_all)]),
    }
    if raw.get("shared"):
        overall.update(cohort_bound(options, raw))
    return {"methods": rows, "overall": overall}


def cohort_bound(options: SpeedOptions, raw: dict[str, Any]) -> dict[str, Any]:
    """What sharing alone can give: the solo runs' total time minus the work a cohort does once instead of
    once per run (M - 1 batch draws, U - 1 teacher forwards, U = the methods that use the teacher), per
    repeat, with the shared parts timed in the same repeat; medians over the repeats.

    ``cohort_over_solo_bound`` = solo time / (solo time - saved): the cohort/solo ratio if the cohort's
    students ran exactly as fast as solo ones. It is what limits the cohort's gain, whatever the loop does.
    """
    methods = options.method_list
    users = sum(method_needs(m, "needs_teacher") for m in methods)
    S = options.steps
    bounds, saved_share, teacher_ms, data_ms = [], [], [], []
    for r, shared in enumerate(raw["shared"]):
        solo = sum(raw["solo"][m][r] for m in methods)
        saved = (len(methods) - 1) * shared["data"] + max(users - 1, 0) * shared["teacher"]
        bounds.append(solo / (solo - saved))
        saved_share.append(saved / solo)
        teacher_ms.append(1000 * shared["teacher"] / S)
        data_ms.append(1000 * shared["data"] / S)
    return {"teacher_forward_ms": statistics.median(teacher_ms), "batch_ms": statistics.median(data_ms),
            "teacher_users": users, "saved_share_of_solo": statistics.median(saved_share),
            "cohort_over_solo_bound": statistics.median(bounds)}


def best_of(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` reduced to the fastest repeat of every configuration (what the machine does unloaded)."""
    out = {"plain": {m: [min(v)] for m, v in raw["plain"].items()},
           "solo": {m: [min(v)] for m, v in raw["solo"].items()}, "cohort": [min(raw["cohort"])]}
    if raw.get("shared"):
        out["shared"] = [{k: min(sh[k] for sh in raw["shared"]) for k in ("data", "teacher")}]
    return out


def render(options: SpeedOptions, summary, memory, env, reductions, fast, layouts, wall_s) -> str:
    mem_kind = memory["kind"]
    mem_label = {"cuda": "peak CUDA MB", "cpu-rss": "peak RSS +MB", "none": "peak mem"}[mem_kind]
    solo_mem = memory.get("solo", {})
    device_desc = env["device"] + (f" ({env['gpu']})" if "gpu" in env else
                                   f" ({env['cpu_model']}, {env['threads']} threads)")
    lines = [
        "# kdbench training-step speed",
        "",
        f"pair {options.teacher} -> {options.student}; data {options.data_desc}; batch {options.batch_size}; "
        f"{options.steps} timed steps after {options.warmup} warm-up, median of {options.repeats} interleaved "
        f"repeats; "
        f"device {device_desc}; torch {env['torch']}, python {env['python']}; plain loop: DataLoader "
        f"num_workers={options.workers}.",
        "",
        "harness fast paths: " + ", ".join(f"{k} {'yes' if v is True else 'no' if v is False else v}"
                                        for k, v in fast.items()) + ".",
        "",
        f"input layout: harness batches {layouts['harness']}, model weights {layouts['harness_weights']}; "
        f"plain batches {layouts['plain']}, model weights {layouts['plain_weights']}.",
        "",
    ]
    if reductions:
        lines += ["--quick reduced: " + "; ".join(reductions) + ".", ""]
    rows = []
    for m, r in summary["methods"].items():
        rows.append([m, fmt(r["plain_img_s"]), fmt(r["solo_img_s"]), fmt(r["solo_over_plain"], 2),
                     fmt(solo_mem.get(m), 0)])
    o = summary["overall"]
    rows.append([f"all {len(summary['methods'])} (sum-time)", fmt(o["plain_img_s"]), fmt(o["solo_img_s"]),
                 fmt(o["solo_over_plain"], 2), fmt(max(solo_mem.values()) if solo_mem and None not in
                                                    solo_mem.values() else None, 0)])
    lines.append("Per method: images/s = (training images stepped, per student) x (number of students) / "
                 "wall time; 'all' = the methods run one after another (total images / total time).")
    lines.append("")
    lines.append(tabulate(rows, headers=["method", "plain img/s", "solo img/s", "solo/plain", f"solo {mem_label}"],
                          tablefmt="github"))
    lines += ["", "Cohort vs the same methods run one at a time (images/s as above, over all students):", ""]
    lines.append(tabulate(
        [[fmt(o["plain_img_s"]), fmt(o["solo_img_s"]), fmt(o["cohort_img_s"]), fmt(o["cohort_over_solo"], 2),
          fmt(o["cohort_over_plain"], 2), fmt(max(solo_mem.values()) if solo_mem and None not in
                                               solo_mem.values() else None, 0), fmt(memory.get("cohort"), 0)]],
        headers=["plain (sum-time) img/s", "solo (sum-time) img/s", "cohort img/s", "cohort/solo",
                 "cohort/plain", f"max solo {mem_label}", f"cohort {mem_label}"], tablefmt="github"))
    met_c = o["cohort_over_solo"] >= TARGETS["cohort_over_solo"]
    n_met = sum(r["solo_over_plain"] >= TARGETS["solo_over_plain"] for r in summary["methods"].values())
    lines += ["",
              f"targets: cohort/solo >= {TARGETS['cohort_over_solo']:.1f}: {'met' if met_c else 'NOT met'} "
              f"({o['cohort_over_solo']:.2f}); solo/plain >= {TARGETS['solo_over_plain']:.1f}: met by {n_met} of "
              f"{len(summary['methods'])} methods (all together {o['solo_over_plain']:.2f}).",
              *([f"what sharing can give: the cohort draws the batch once instead of {len(summary['methods'])} "
                 f"times ({o['batch_ms']:.0f} ms each) and runs the teacher once instead of {o['teacher_users']} "
                 f"times ({o['teacher_forward_ms']:.0f} ms per forward, timed alone); that is "
                 f"{100 * o['saved_share_of_solo']:.0f}% of the solo runs' time, so a cohort whose students "
                 f"step as fast as solo ones reaches cohort/solo = {o['cohort_over_solo_bound']:.2f} "
                 f"(measured {o['cohort_over_solo']:.2f})."] if "cohort_over_solo_bound" in o else []),
              f"memory: {memory['note']}",
              f"wall time of the benchmark: {wall_s:.0f} s."]
    return "\n".join(lines) + "\n"
