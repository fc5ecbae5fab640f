"""``--breakdown``: where the step's time goes, part by part, in the plain loop, the solo runs and the cohort,
timed by the loops themselves (``kdcore.steptimer.StepTimer``), and the cohort set against the solo runs."""
from __future__ import annotations

from typing import Any

from tabulate import tabulate

from kdcore.steptimer import PARTS, StepTimer
from benchmarks.speed.harness import time_harness
from benchmarks.speed.plain import time_plain
from benchmarks.speed.setup import Setup, log

SHARED_PARTS = ("data", "teacher fwd")  # what a cohort does once per batch for all its students


def breakdown(setup: Setup, warmup: int, steps: int) -> list[dict[str, Any]]:
    """ms per step of each part: plain and solo of every method, then the cohort (one measurement each)."""
    rows = []
    for kind, names in [(k, [m]) for m in setup.options.method_list for k in ("plain", "solo")] + \
                       [("cohort", setup.options.method_list)]:
        timer = StepTimer(setup.device)
        if kind == "plain":
            total = time_plain(setup, names[0], warmup, steps, timer)["seconds"]
        else:
            total = time_harness(setup, names, warmup, steps, timer=timer)["seconds"]
        ms = {p: 1000 * v / steps for p, v in timer.seconds().items()}
        ms["other"] = 1000 * total / steps - sum(ms.values())
        ms["total"] = 1000 * total / steps
        rows.append({"kind": kind, "method": names[0] if kind != "cohort" else f"all {len(names)}", "ms": ms})
        log(f"  breakdown {kind:6s} {rows[-1]['method']:10s} " +
            ", ".join(f"{k} {whole_ms(v)}" for k, v in ms.items()) + " ms/step")
    return rows


def whole_ms(v: float) -> str:
    return f"{v:.0f}" if round(v) else "0"  # no "-0" for a part that is a rounding error below zero


def breakdown_compare(rows: list[dict[str, Any]]) -> dict[str, float] | None:
    """The cohort's step against the solo runs' steps summed, split into the shared parts (batch, teacher
    forward) and the students' own parts (all the rest, 'other' included), in ms per step.

    ``student_cohort_over_solo`` near 1 means the students step as fast in the cohort as alone, so all of the
    cohort's gain comes from the shared parts; below 1, the cohort also makes its students faster.
    """
    solo = [r["ms"] for r in rows if r["kind"] == "solo"]
    cohort = next((r["ms"] for r in rows if r["kind"] == "cohort"), None)
    if cohort is None or not solo:
        return None

    def shared(ms):
        return sum(ms[p] for p in SHARED_PARTS)

    out = {"solo_shared_ms": sum(shared(ms) for ms in solo), "cohort_shared_ms": shared(cohort),
           "solo_student_ms": sum(ms["total"] - shared(ms) for ms in solo),
           "cohort_student_ms": cohort["total"] - shared(cohort)}
    out["student_cohort_over_solo"] = out["cohort_student_ms"] / out["solo_student_ms"]
    out["cohort_over_solo"] = sum(ms["total"] for ms in solo) / cohort["total"]
    return out


def render_breakdown(rows: list[dict[str, Any]]) -> str:
    cols = PARTS + ["other", "total"]
    table = [[r["kind"], r["method"], *(whole_ms(r["ms"][c]) for c in cols)] for r in rows]
    text = ("Where the time goes (ms per step, one measurement each, timed by each loop's step timer around its "
            "own calls; 'student fwd' includes the forward on extra samples; 'other' = CE, weighting, the finite "
            "check, zero_grad, bookkeeping, Python):\n\n" +
            tabulate(table, headers=["kind", "method", *cols], tablefmt="github") + "\n")
    cmp = breakdown_compare(rows)
    if cmp is not None:
        n = sum(r["kind"] == "solo" for r in rows)
        text += (f"\ncohort against the {n} solo runs summed (ms per step): shared parts (batch, teacher forward) "
                 f"{cmp['cohort_shared_ms']:.0f} against {cmp['solo_shared_ms']:.0f}; the students' own parts "
                 f"(everything else) {cmp['cohort_student_ms']:.0f} against {cmp['solo_student_ms']:.0f}, i.e. "
                 f"{cmp['student_cohort_over_solo']:.2f}x their solo time; cohort/solo of this measurement "
                 f"{cmp['cohort_over_solo']:.2f}.\n")
    return text
