"""A report section in one file: the slowest complete run of each pair (where a grid's time goes).

Importing this module registers the section; ``build_report`` then writes it after the built-in ones, as
``## 10. Slowest run per pair`` (``## 11.`` when the grid has a sweeps section).
"""
from __future__ import annotations

from reports import ReportContext, report_section
from reports.tables import esc, fmt_duration, pair_label


@report_section(order=110, title="Slowest run per pair")
def slowest_run_per_pair(ctx: ReportContext) -> str | None:
    done = ctx.res.complete.dropna(subset=["time_s"])
    if done.empty:
        return None  # no complete run recorded its time: the section is left out
    lines = ["| Pair | Method | Seed | Wall time |", "|:--|:--|--:|--:|"]
    for pair in ctx.res.grid.pairs:
        runs = done[done["pair"] == pair]
        if runs.empty:
            continue
        run = runs.loc[runs["time_s"].idxmax()]  # the first one in grid order on a tie
        lines.append(f"| {pair_label(pair)} | {esc(run['method'])} | {int(run['seed'])} "
                     f"| {fmt_duration(float(run['time_s']))} |")
    return "\n".join(lines) + "\n\nEach pair's longest complete run (its record's wall time, all epochs)."
