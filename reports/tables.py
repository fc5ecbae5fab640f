"""Markdown sections of report.md (tabulate, GitHub pipe tables)."""
from __future__ import annotations

import math

import pandas as pd
from tabulate import tabulate

from . import aggregate as agg
from . import published as pub

__all__ = ["md_table", "fmt_cell", "accuracy_tables", "gain_section", "published_section",
           "cost_section", "inventory_section", "pair_label"]

DASH = "–"
DAGGER = "†"


def md_table(headers: list[str], rows: list[list[str]], align: list[str] | None = None) -> str:
    if align is None:
        align = ["left"] + ["right"] * (len(headers) - 1)
    return tabulate(rows, headers=headers, tablefmt="pipe", colalign=align, disable_numparse=True)


def esc(text: object) -> str:
    """Make text safe inside a pipe-table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def pair_label(pair: str) -> str:
    t, s = agg.parse_pair(pair)
    return f"{t} → {s}"


def fmt_cell(mean: float, std: float, n: int) -> str:
    """'mean ± std (n)'; 'mean (n=1)' for a single seed; a dash without data."""
    if n == 0 or math.isnan(mean):
        return DASH
    if n == 1 or math.isnan(std):
        return f"{mean:.2f} (n=1)"
    return f"{mean:.2f} ± {std:.2f} ({n})"


def fmt_signed(x: float) -> str:
    if x is None or math.isnan(x):
        return DASH
    if abs(x) < 0.005:
        x = 0.0  # no "-0.00"
    return f"{x:+.2f}"


def _teacher_cell(vals: list[float]) -> str:
    if not vals:
        return DASH
    if len(vals) == 1:
        return f"{vals[0]:.2f}"
    s = pd.Series(vals)
    return f"{s.mean():.2f} ± {s.std(ddof=1):.2f} ({len(vals)} teachers)"


def _pair_groups(grid: agg.Grid) -> list[tuple[str, list[str]]]:
    same = [p for p in grid.pairs if agg.is_same_arch(*agg.parse_pair(p))]
    cross = [p for p in grid.pairs if p not in same]
    return [(title, ps) for title, ps in (("Same-architecture pairs", same),
                                         ("Cross-architecture pairs", cross)) if ps]


def accuracy_tables(res: agg.Results, stats: pd.DataFrame, teacher: dict[str, list[float]]) -> str:
    """The CRD-layout table for one metric: methods x pairs, one sub-table per pair group."""
    methods = agg.method_order(res.grid)
    marks: dict[str, tuple[set, set]] = {}
    for p in res.grid.pairs:
        col = stats.xs(p, level="pair")
        marks[p] = agg.best_and_indistinguishable(col)
    parts = []
    for title, pairs in _pair_groups(res.grid):
        headers = ["method"] + [pair_label(p) for p in pairs]
        rows = [["teacher"] + [_teacher_cell(teacher.get(p, [])) for p in pairs]]
        for m in methods:
            row = [m]
            for p in pairs:
                st = stats.loc[(m, p)]
                cell = fmt_cell(st["mean"], st["std"], int(st["n"]))
                best, dag = marks[p]
                if m in best:
                    cell = f"**{cell}**"
                elif m in dag:
                    cell = f"{cell}{DAGGER}"
                row.append(cell)
            rows.append(row)
        parts.append(f"**{title}**\n\n" + md_table(headers, rows))
    return "\n\n".join(parts)


ACCURACY_FOOTNOTE = (
    "Cells: mean ± sample std (ddof = 1) of student top-1 (%) over seeds, (n) = number of complete "
    "seeds; `mean (n=1)` = a single seed; – = no complete run. The teacher row is the teacher's own "
    "top-1 (from the runs' `teacher_info`). **Bold**: best mean in the column (teacher row excluded, "
    "vanilla included; exact ties are all bold). †: not distinguishable from the best: the cell's 95% "
    "t-interval over seeds, mean ± t(0.975, n−1)·std/√n, overlaps the best cell's. A cell or best with a "
    "single seed has no interval and gets no †."
)


def gain_section(res: agg.Results, means: pd.DataFrame) -> str:
    methods = [m for m in agg.method_order(res.grid) if m in means.index]
    if not methods or means.isna().all().all():
        return "_No complete runs: no gains or ranks._"
    refs = [r for r in (agg.VANILLA, agg.KD) if r in means.index]
    gains = {r: agg.gain_table(means, r) for r in refs}
    ranks = agg.average_ranks(means)
    n_pairs = len(res.grid.pairs)
    headers = ["method"] + [pair_label(p) for p in res.grid.pairs]
    if agg.VANILLA in gains:
        headers.append("avg gain vs vanilla")
    if agg.KD in gains:
        headers.append("avg gain vs kd")
    headers.append("avg rank")
    rows = []
    for m in methods:
        row = [m]
        for p in res.grid.pairs:
            parts = [DASH if m == r else fmt_signed(gains[r].at[m, p]) for r in refs]
            row.append(" / ".join(parts) if parts else DASH)
        for r in refs:
            if m == r:
                row.append(DASH)
            else:
                g = gains[r].loc[m].dropna()
                row.append(fmt_signed(g.mean()) if len(g) else DASH)
        rk, k = ranks.at[m, "avg_rank"], int(ranks.at[m, "n_pairs"])
        cell = DASH if k == 0 or math.isnan(rk) else f"{rk:.2f}"
        if 0 < k < n_pairs:
            cell += f" ({k}/{n_pairs} pairs)"
        row.append(cell)
        rows.append(row)
    if refs:
        what = " / ".join(f"Δ vs {r}" for r in refs)
        note = (f"Cells: {what}, difference of mean last-epoch top-1 (percentage points) in that pair. "
                f"Average gains are over the pairs where both rows have data.")
    else:
        note = "No `vanilla` or `kd` row in this grid: no gains, ranks only."
    note += (" Rank: 1 = best mean last-epoch top-1 among the student rows of the column (teacher "
             "excluded), ties share the average rank; avg rank = mean over the pairs the method has "
             "data for.")
    return md_table(headers, rows) + "\n\n" + note


def published_section(res: agg.Results, last: pd.DataFrame, best: pd.DataFrame,
                      teacher: dict[str, list[float]], published) -> str:
    grid = res.grid
    if not pub.is_cifar100(grid.dataset):
        return (f"No published numbers apply: this grid's dataset is `{grid.dataset}`, and the "
                f"reference numbers (`reports/data/cifar100_published.csv`) are CIFAR-100 results.")
    table = pub.load_published(published)
    teach = {p: float(pd.Series(v).mean()) for p, v in teacher.items() if v}
    cmp = pub.compare(table, last, best, teach, grid.pairs, agg.method_order(grid), agg.parse_pair)
    if cmp.empty:
        return ("No published CIFAR-100 number matches this grid's pairs and methods (or none of "
                "those cells has a complete run yet).")
    sources = list(dict.fromkeys(cmp["source"]))
    protocols = list(dict.fromkeys(cmp["protocol"]))
    headers = ["pair", "method", "ours (last)", "ours (best)", "published", "Δ (ours − published)",
               "protocol", "source"]
    rows = []
    for _, r in cmp.iterrows():
        n = "" if r["n"] is None or pd.isna(r["n"]) else f" ({int(r['n'])})"
        last_s, best_s = f"{r['ours_last']:.2f}{n}", f"{r['ours_best']:.2f}{n}"
        if r["method"] == "teacher":
            best_s = last_s = f"{r['ours_last']:.2f}"
        diff = fmt_signed(r["diff"]) + (" (vs best)" if r["vs_best"] else "")
        rows.append([pair_label(r["pair"]), r["method"], last_s, best_s, f"{r['published']:.2f}",
                     diff, esc(pub.short_protocol(r["protocol"])),
                     f"[{sources.index(r['source']) + 1}]"])
    notes = ["Ours: mean top-1 over complete seeds (n). Δ is taken against our number with the "
             "published number's protocol: last-epoch unless the row says *(vs best)*."]
    notes += [f"[{i + 1}] {esc(s)}" for i, s in enumerate(sources)]
    notes += ["Protocols: " + "; ".join(esc(p) for p in protocols) + "."]
    return md_table(headers, rows, ["left", "left"] + ["right"] * 4 + ["left", "left"]) + "\n\n" + "\n\n".join(notes)


def fmt_duration(s: float) -> str:
    if s is None or math.isnan(s):
        return DASH
    if s < 120:
        return f"{s:.1f} s"
    if s < 2 * 3600:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


def fmt_params(x: float) -> str:
    if x is None or math.isnan(x):
        return DASH
    if abs(x) >= 1e6:
        return f"{x / 1e6:.2f} M"
    if abs(x) >= 1e4:
        return f"{x / 1e3:.1f} k"
    return f"{x:,.0f}"


def _f(x: float, fmt: str) -> str:
    return DASH if x is None or math.isnan(x) else format(x, fmt)


def cost_section(res: agg.Results, cost: pd.DataFrame) -> str:
    if cost.empty or cost["runs"].sum() == 0:
        return "_No complete runs: no cost figures._"
    headers = ["method", "runs", "epoch time (s)", "images/s", "peak memory (MB)",
               "extra trainable params", "total time / run", "total time (all runs)"]
    rows = []
    for m, r in cost.iterrows():
        rows.append([m, str(int(r["runs"])), _f(r["epoch_time_s"], ".2f"), _f(r["images_per_s"], ",.0f"),
                     _f(r["peak_mem_mb"], ",.0f"), fmt_params(r["extra_params"]),
                     fmt_duration(r["time_s"]), fmt_duration(r["time_total_s"])])
    return (md_table(headers, rows) + "\n\nAverages over each method's complete runs (all pairs); extra "
            "trainable params = the method's own modules (adapters, embeddings) that join the "
            "optimizer, beyond the student.")


def _num_or_blank(x) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{int(x)}"


def inventory_section(res: agg.Results) -> str:
    runs = res.runs
    g = runs[runs["in_grid"]]
    c = res.counts()
    parts = [", ".join(f"{c[s]} {s}" for s in agg.STATUSES) + f" (of {c['expected']} expected)"
             + (f"; {c['other']} with another status" if c["other"] else "")
             + (f"; {c['extra']} record(s) outside the grid" if c["extra"] else "") + "."]

    failed = g[g["status"] == "failed"]
    if len(failed):
        rows = [[f"`{r.run_id}`", esc(": ".join(x for x in (r.error_type, r.error_message) if x) or "(no message)"),
                 _num_or_blank(r.error_epoch), _num_or_blank(r.error_step)] for r in failed.itertuples()]
        parts.append("**Failed**\n\n" + md_table(["run", "error (first line)", "epoch", "step"], rows,
                                                 ["left", "left", "right", "right"]))
    running = g[g["status"] == "running"]
    if len(running):
        rows = [[f"`{r.run_id}`", _num_or_blank(r.epochs_done)] for r in running.itertuples()]
        parts.append("**Running**\n\n" + md_table(["run", "epochs logged"], rows))
    corrupt = g[g["status"] == "corrupt"]
    if len(corrupt):
        rows = [[f"`{r.run_id}`", esc(r.error_message)] for r in corrupt.itertuples()]
        parts.append("**Corrupt records** (unreadable JSON)\n\n" + md_table(["run", "error"], rows, ["left", "left"]))
    other = g[~g["status"].isin(agg.STATUSES)]
    if len(other):
        rows = [[f"`{r.run_id}`", esc(r.status)] for r in other.itertuples()]
        parts.append("**Other status**\n\n" + md_table(["run", "status"], rows, ["left", "left"]))
    missing = g[g["status"] == "missing"]
    if len(missing):
        parts.append("**Missing** (expected by the grid, no record)\n\n"
                     + "\n".join(f"- `{r}`" for r in missing["run_id"]))
    extra = runs[~runs["in_grid"]]
    if len(extra):
        rows = [[f"`{r.run_id}`", esc(r.status)] for r in extra.itertuples()]
        parts.append("**Records outside the grid** (not in any table)\n\n"
                     + md_table(["run", "status"], rows, ["left", "left"]))
    done = g[g["status"] == "complete"]
    if len(done):
        rows = [[f"`{r.run_id}`", _f(r.top1_last, ".2f"), _f(r.top1_best, ".2f"), _num_or_blank(r.epochs),
                 fmt_duration(r.time_s)] for r in done.itertuples()]
        parts.append("<details><summary><b>Complete</b> (" + str(len(done)) + " runs)</summary>\n\n"
                     + md_table(["run", "top-1 last", "top-1 best", "epochs", "time"], rows)
                     + "\n\n</details>")
    return "\n\n".join(parts)
