"""Markdown sections of report.md (tabulate, GitHub pipe tables)."""
from __future__ import annotations

import math

import pandas as pd
from tabulate import tabulate

from kdcore import MethodCatalogue
from kdcore.config import REFERENCE_KEYS, teacher_recipe
from kdcore.metrics import Metric, list_metrics
from kdcore.text import plural

from . import aggregate as agg
from . import protocol as proto
from . import published as pub
from . import significance as sig

__all__ = ["md_table", "fmt_cell", "accuracy_tables", "gain_section", "fidelity_section", "published_section",
           "cost_section", "cohort_memory_section", "fmt_bytes", "inventory_section", "pair_label",
           "significance_section", "fmt_paired", "sensitivity_section", "tuned_section", "summary_section"]

DASH = "–"
DAGGER = "†"
VIEWS_MARK = "‡"


NOT_APPLICABLE = "n/a"


def methods_with_views(res: agg.Results) -> dict[str, str]:
    """Method -> the other views its complete runs trained on (``"strong"``), for those that have any."""
    done = res.complete
    if done.empty or "views" not in done:
        return {}
    out = {}
    for m, views in done.groupby("method")["views"]:
        names = sorted({v for v in views if v})
        if names:
            out[str(m)] = ", ".join(names)
    return out


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


def fmt_cell(mean: float, std: float, n: int, digits: int = 2) -> str:
    """'mean ± std (n)'; 'mean (n=1)' for a single seed; a dash without data."""
    if n == 0 or math.isnan(mean):
        return DASH
    if n == 1 or math.isnan(std):
        return f"{mean:.{digits}f} (n=1)"
    return f"{mean:.{digits}f} ± {std:.{digits}f} ({n})"


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
    viewed = methods_with_views(res)
    na = agg.not_applicable_cells(res)
    for title, pairs in _pair_groups(res.grid):
        headers = ["method"] + [pair_label(p) for p in pairs]
        rows = [["teacher"] + [_teacher_cell(teacher.get(p, [])) for p in pairs]]
        for m in methods:
            row = [f"{m}{VIEWS_MARK}" if m in viewed else m]
            for p in pairs:
                st = stats.loc[(m, p)]
                cell = fmt_cell(st["mean"], st["std"], int(st["n"]))
                if int(st["n"]) == 0 and (m, p) in na:
                    cell = NOT_APPLICABLE
                best, dag = marks[p]
                if m in best:
                    cell = f"**{cell}**"
                elif m in dag:
                    cell = f"{cell}{DAGGER}"
                row.append(cell)
            rows.append(row)
        parts.append(f"**{title}**\n\n" + md_table(headers, rows))
    if na:
        parts.append(f"{NOT_APPLICABLE}: the method cannot run this pair, as its reference cannot: "
                     + "; ".join(f"{m} on {pair_label(p)}: {why}" for (m, p), why in na.items()) + ".")
    if viewed:
        parts.append(f"{VIEWS_MARK}: trained on two views of each batch (the usual crop+flip and a "
                     f"{'/'.join(sorted(set(viewed.values())))} view: RandAugment + Cutout, MLKD's protocol): a "
                     f"different augmentation protocol from the other rows, and twice the forward passes.")
    return "\n\n".join(parts)


ACCURACY_FOOTNOTE = (
    "Cells: mean ± sample std (ddof = 1) of student top-1 (%) over seeds, (n) = number of complete "
    "seeds; `mean (n=1)` = a single seed; – = no complete run. The teacher row is the teacher's own "
    "top-1 (from the runs' `teacher_info`). **Bold**: best mean in the column (teacher row excluded, "
    "vanilla included; exact ties are all bold). †: not distinguishable from the best: the cell's 95% "
    "t-interval over seeds, mean ± t(0.975, n−1)·std/√n, overlaps the best cell's. A cell or best with a "
    "single seed has no interval and gets no †."
)


# ---------------------------------------------------------------------------- fidelity
def fidelity_tables() -> list[Metric]:
    """The fidelity section's tables, in order: every registered metric with a report column
    (``kdcore.metrics``: agreement, KL, ECE, then any registered later), by its ``column``, ``title`` and
    ``digits``."""
    return [m for m in list_metrics() if m.column is not None]


# the metrics FIDELITY_FOOTNOTE explains; another registered metric's description follows it
_FOOTNOTED = ("agreement", "kl_teacher", "ece")

FIDELITY_FOOTNOTE = (
    "Did the student learn the teacher? (Stanton et al., NeurIPS 2021, \"Does knowledge distillation really "
    "work?\"). On the test set at the last epoch: agreement = % of test samples where the student's top-1 "
    "class is the teacher's; KL = KL(teacher ‖ student) of the softmax outputs at T = 1, summed over classes "
    "(natural log), averaged over the test samples; ECE = expected calibration error, 15 equal-width "
    "confidence bins over [0, 1], Σ |accuracy − confidence| · n_bin / n, in percent; the teacher row is the "
    "teacher's own ECE. Cells: mean ± sample std over seeds (n); – = no complete run recorded it (records "
    "written before these metrics existed, or runs trained without a teacher)."
)


def _stats_table(res: agg.Results, stats: pd.DataFrame, digits: int, teacher: dict | None = None) -> str:
    """methods x pairs of one per-run metric (``cell_stats``), an optional teacher row first."""
    headers = ["method"] + [pair_label(p) for p in res.grid.pairs]
    rows = [["teacher"] + [_teacher_cell(teacher.get(p, [])) for p in res.grid.pairs]] if teacher is not None else []
    for m in agg.method_order(res.grid):
        rows.append([m] + [fmt_cell(stats.at[(m, p), "mean"], stats.at[(m, p), "std"], int(stats.at[(m, p), "n"]),
                                    digits) for p in res.grid.pairs])
    return md_table(headers, rows)


def fidelity_section(res: agg.Results, stats: dict[str, pd.DataFrame]) -> str:
    """Agreement, KL and ECE tables (methods x pairs, last epoch), then one per other registered metric with a
    report column (``fidelity_tables``); ``stats``: column -> ``cell_stats`` (computed here for a column it
    lacks). A metric with ``teacher_info`` (the ECE's ``"ece"``) gets a teacher row: each pair's values of
    that key in its records' ``teacher_info``."""
    parts, more = [], []
    for m in fidelity_tables():
        teacher = None
        if m.teacher_info is not None:
            teacher = agg.teacher_top1(res, agg.teacher_column(m))
        table = stats[m.column] if m.column in stats else agg.cell_stats(res, m.column)
        parts.append(f"**{m.title}**\n\n" + _stats_table(res, table, m.digits, teacher))
        if m.name not in _FOOTNOTED:
            more.append(f" {m.title}: {m.description}.")
    return "\n\n".join(parts) + "\n\n" + FIDELITY_FOOTNOTE + "".join(more)


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


# ---------------------------------------------------------------------------- summary
def _best_in_pair(res: agg.Results, last: pd.DataFrame, paired: pd.DataFrame | None, pair: str) -> str | None:
    """'wrn_40_2 → wrn_16_2: crd 75.00, 1.50 ahead of kd, 1 other within noise (†); vs vanilla +4.50 [...]'."""
    col = last.xs(pair, level="pair")
    col = col[col["n"] > 0]
    if col.empty:
        return None
    best, dagger = agg.best_and_indistinguishable(col)
    best = [m for m in col.index if m in best]  # grid order
    top = float(col.at[best[0], "mean"])
    text = f"{' and '.join(best)} {top:.2f}" + (" (tied)" if len(best) > 1 else "")
    rest = col.drop(index=best)
    if rest.empty:
        text += " (the only method with a complete run)"
    else:
        runner = rest["mean"].idxmax()  # the first in grid order on a tie
        text += f", {top - float(rest.at[runner, 'mean']):.2f} ahead of {runner}"
    if dagger:
        text += f", {plural(len(dagger), 'other')} within noise of it (†)"
    if paired is not None and len(best) == 1 and best[0] != agg.VANILLA:
        d = paired.loc[(best[0], pair)]
        text += f"; vs {agg.VANILLA} {fmt_paired(d['mean'], d['lo'], d['hi'], int(d['n']))}"
    return f"{pair_label(pair)}: {text}"


def _against_reference(paired: pd.DataFrame | None) -> str:
    if paired is None:
        return f"no `{agg.VANILLA}` row in this grid: nothing to compare with"
    counts: dict[str, list[int]] = {}  # method -> [above, below, pairs with an interval]
    for (m, _), d in paired.iterrows():
        c = counts.setdefault(str(m), [0, 0, 0])
        side = sig.interval_side(int(d["n"]), d["lo"], d["hi"])
        c[0] += side > 0
        c[1] += side < 0
        c[2] += int(d["n"]) >= 2
    if not any(c[2] for c in counts.values()):
        return "no interval: no cell has 2 seeds where both runs are complete"
    out = []
    for side, word in ((0, "above"), (1, "below")):
        groups: dict[tuple[int, int], list[str]] = {}  # (pairs beyond noise, pairs with an interval) -> methods
        for m, c in counts.items():
            if c[side]:
                groups.setdefault((c[side], c[2]), []).append(m)  # grid order within a group
        listed = "; ".join(f"on {k} of {plural(n, 'pair')}: {', '.join(ms)}"
                           for (k, n), ms in sorted(groups.items(), key=lambda kv: (-kv[0][0] / kv[0][1], -kv[0][1])))
        out.append(f"**{word}** {listed or 'none'}")
    return "; ".join(out)


def _collapses(means: pd.DataFrame) -> str:
    if agg.VANILLA not in means.index:
        return f"no `{agg.VANILLA}` row in this grid: nothing to compare with"
    cells = agg.collapsed_cells(means)
    if not cells:
        return "none"
    out = []
    for m in dict.fromkeys(m for m, _ in cells):
        mine = {p: v for (mm, p), v in cells.items() if mm == m}
        both = int((means.loc[m].notna() & means.loc[agg.VANILLA].notna()).sum())
        p_low, (v, ref) = min(mine.items(), key=lambda kv: kv[1][0])
        out.append(f"{m} ({len(mine)} of {plural(both, 'pair')}; lowest {v:.2f} against vanilla's {ref:.2f} on "
                   f"{pair_label(p_low)})")
    return ", ".join(out)


def _across_pairs(fr: sig.Friedman) -> str:
    na = f"; {', '.join(fr.methods_not_applicable)} left out (not applicable on some pair)" \
        if fr.methods_not_applicable else ""
    if fr.note:
        return fr.note + na
    verdict = ("the methods differ (p < {a}): section 9 says which" if fr.pvalue < sig.ALPHA
               else "no difference shown (p ≥ {a})").format(a=sig.ALPHA)
    return f"p = {fr.pvalue:.3g} over {len(fr.methods)} methods and {len(fr.pairs)} pairs, {verdict}{na}"


def summary_section(res: agg.Results, last: pd.DataFrame, paired: pd.DataFrame | None, fr: sig.Friedman) -> str:
    """The report's first lines: the best method per pair (its lead and its paired interval vs vanilla), the
    methods beyond seed noise against vanilla, the collapses and the test across pairs, each computed by the
    same functions as tables 1 and 9 (``last``: ``cell_stats`` of last-epoch top-1; ``paired``:
    ``paired_differences`` vs vanilla, None without a vanilla row)."""
    best = [b for b in (_best_in_pair(res, last, paired, p) for p in res.grid.pairs) if b]
    lines = [
        "- **Best per pair** (mean top-1, table 1; its lead over the next method; the paired difference vs "
        "vanilla with its 95% interval, section 9): " + ("; ".join(best) if best else "no complete run") + ".",
        "- **Against vanilla beyond seed noise** (the paired 95% interval clear of 0, section 9's bold cells): "
        + _against_reference(paired) + ".",
        f"- **Collapsed** (mean top-1 below {agg.COLLAPSE_FRACTION:g} × vanilla's on the same pair): "
        + _collapses(agg.mean_table(last)) + ".",
        "- **Across pairs** (Friedman test, section 9): " + _across_pairs(fr) + ".",
    ]
    return "**Summary** (last-epoch top-1)\n\n" + "\n".join(lines)


# ---------------------------------------------------------------------------- is the gain real?
def fmt_paired(mean: float, lo: float, hi: float, n: int) -> str:
    """'+0.42 [-0.10, +0.94] (3)'; '+0.42 (1)' for one seed (no interval); a dash without data."""
    if n == 0 or math.isnan(mean):
        return DASH
    if n == 1 or math.isnan(lo):
        return f"{fmt_signed(mean)} ({n})"
    return f"{fmt_signed(mean)} [{fmt_signed(lo)}, {fmt_signed(hi)}] ({n})"


def _seed_count(lo: int, hi: int) -> str:
    return plural(lo, "seed") if lo == hi else f"{lo}–{hi} seeds"


def _friedman_part(res: agg.Results, fr: sig.Friedman, figure) -> str:
    left = []
    for m, pairs in fr.methods_not_applicable.items():
        left.append(f"method {m} (not applicable on {', '.join(pair_label(p) for p in pairs)}: the test leaves "
                    f"the method out and keeps the pair{'' if len(pairs) == 1 else 's'})")
    if fr.methods_left_out:
        left.append(f"method{'' if len(fr.methods_left_out) == 1 else 's'} "
                    f"{', '.join(fr.methods_left_out)} (no complete run)")
    if fr.pairs_left_out and not fr.note:
        left.append(f"pair{'' if len(fr.pairs_left_out) == 1 else 's'} "
                    f"{', '.join(pair_label(p) for p in fr.pairs_left_out)} (a tested method has no complete run there)")
    left_s = f" Left out: {'; '.join(left)}." if left else ""
    if fr.note:
        return f"_Friedman test and critical-difference diagram {fr.note}._{left_s}"
    k, n = len(fr.methods), len(fr.pairs)
    if fr.all_tied:
        result = "every method ties in every pair: nothing to rank, χ² = 0, p = 1"
    else:
        result = f"χ²({k - 1}) = {fr.statistic:.2f}, p = {fr.pvalue:.3g}"
    runs = (f"{n} pairs × {_seed_count(*fr.seeds)} per cell ({fr.n_runs} complete runs; grid seeds "
            f"{', '.join(map(str, res.grid.seeds))})")
    lines = [f"Friedman test over {k} methods, one block per pair: {result}. It rests on {runs}, "
             f"last-epoch top-1.{left_s}"]
    if figure is not None and figure.made:
        lines.append(f"![{figure.title}]({figure.file})")
        lines.append(f"{figure.caption} Critical difference (Nemenyi, α = {sig.ALPHA}): CD = {fr.cd:.2f} ranks.")
    lines.append(
        "Blocks are the pairs, not pair × seed: a pair's seeds share its teacher, architectures and data, so "
        "they are repeated measurements of one task; as blocks they would inflate N and shrink p (seed noise "
        "is what the within-pair tables below test). A method's value in a pair is its mean last-epoch top-1 "
        "over its complete seeds (table 1), ranked within the pair as in table 3 (1 = best, ties share the "
        "average rank); the axis shows the average rank over the tested pairs. p: `scipy.stats.friedmanchisquare` "
        "(χ² approximation, rough with few pairs). Diagram: scikit-posthocs' `critical_difference_diagram`; a "
        "bar joins methods that `posthoc_nemenyi_friedman` does not tell apart at α = 0.05, i.e. whose average "
        "ranks differ by less than CD = q(0.05, k, ∞)/√2 · √(k(k+1)/(6N)); read the bars only when the Friedman "
        f"p < 0.05. A test needs at least {sig.MIN_METHODS} methods and {sig.MIN_PAIRS} pairs: with 2 blocks the "
        "largest possible statistic, 2(k − 1), cannot reach p < 0.05 for k ≤ 8.")
    return "\n\n".join(lines)


def _paired_table(res: agg.Results, diffs: pd.DataFrame) -> str:
    headers = ["method"] + [pair_label(p) for p in res.grid.pairs]
    rows = []
    for m in dict.fromkeys(diffs.index.get_level_values("method")):
        row = [m]
        for p in res.grid.pairs:
            d = diffs.loc[(m, p)]
            cell = fmt_paired(d["mean"], d["lo"], d["hi"], int(d["n"]))
            if sig.interval_side(int(d["n"]), d["lo"], d["hi"]):
                cell = f"**{cell}**"
            row.append(cell)
        rows.append(row)
    return md_table(headers, rows)


def significance_section(res: agg.Results, fr: sig.Friedman, paired: dict[str, pd.DataFrame | None],
                         figure=None) -> str:
    """Section "Is the gain real?": the Friedman test across pairs (with the diagram ``figure``, a
    ``figures.FigureResult``) and the paired differences within each pair, one table per reference."""
    parts = ["**Across pairs: Friedman test and critical-difference diagram**\n\n" + _friedman_part(res, fr, figure)]
    refs = [r for r, d in paired.items() if d is not None]
    for r in refs:
        parts.append(f"**Within a pair: paired difference vs {r} over seeds**\n\n" + _paired_table(res, paired[r]))
    if refs:
        seeds = ", ".join(map(str, res.grid.seeds))
        one = any((d["n"] == 1).any() for d in paired.values() if d is not None)
        parts.append(
            "Cells: mean over seeds of (method − reference) last-epoch top-1, percentage points, each seed's run "
            "minus the reference's run of the same seed (same student initialisation and data order, so the "
            "differences are paired), [95% t-interval: mean ± t(0.975, n − 1) · sd / √n, `scipy.stats.t`], "
            f"(n) = seeds where both runs are complete (grid seeds: {seeds}). **Bold**: the interval excludes 0. "
            "Each interval stands alone (no correction for the number of cells)."
            + (" `+x (1)`: a single common seed, the difference alone, no interval." if one else "")
            + f" {DASH}: no seed with both runs complete.")
    else:
        parts.append(f"No `{agg.VANILLA}` or `{agg.KD}` row in this grid: no paired differences.")
    return "\n\n".join(parts)


def _dicts(x) -> dict:
    return x if isinstance(x, dict) else {}


def protocol_differences(res: agg.Results, catalogue: MethodCatalogue | None = None):
    """Per complete in-grid run, how its protocol differs from the published one.

    Returns (student, teacher): dicts (method, pair) -> {run_id: [Diff]} and pair -> {run_id: [Diff]}.
    """
    student: dict[tuple[str, str], dict[str, list]] = {}
    teacher: dict[str, dict[str, list]] = {}
    for r in res.complete.itertuples():
        cfg = _dicts(r.config)
        student.setdefault((r.method, r.pair), {})[r.run_id] = proto.run_differences(
            r.method, r.student, r.dataset, cfg, r.pair, catalogue)
        teacher.setdefault(r.pair, {})[r.run_id] = proto.teacher_differences(
            r.teacher, _dicts(r.teacher_info), r.dataset, cfg, res.grid.config)
    return student, teacher


def _diff_table(student: dict, teacher: dict) -> str:
    """One row per (setting, value here, published value), with how many runs / teachers it touches."""
    n_runs = sum(len(v) for v in student.values())
    n_pairs = len(teacher)
    rows: dict[tuple[str, str, str], list[set, set]] = {}
    for runs in student.values():
        for rid, diffs in runs.items():
            for d in diffs:
                rows.setdefault((d.key, d.ours, d.ref), [set(), set()])[0].add(rid)
    for pair, runs in teacher.items():
        for diffs in runs.values():
            for d in diffs:
                if d.key.startswith("teacher."):
                    rows.setdefault((d.key, d.ours, d.ref), [set(), set()])[1].add(pair)
    first: dict[str, int] = {}
    for key, _, _ in rows:
        first.setdefault(key, len(first))
    out = []
    for (key, ours, ref), (rids, pairs) in sorted(rows.items(), key=lambda kv: first[kv[0][0]]):
        what = []
        if rids:
            what.append(f"{len(rids)} of {plural(n_runs, 'student run')}")
        if pairs:
            what.append(f"{len(pairs)} of {plural(n_pairs, 'teacher')}")
        out.append([f"`{key}`", esc(ours), esc(ref), ", ".join(what)])
    return md_table(["setting", "this grid", "published protocol", "affects"], out,
                    ["left", "right", "right", "left"])


PROTOCOL_TEXT = (
    "RepDistiller's CIFAR-100 protocol: the `cifar100` preset's recipe (240 epochs, batch 64, SGD lr "
    "0.05, 0.01 for MobileNetV2/ShuffleV1/ShuffleV2 students, momentum 0.9, weight decay 5e-4, ×0.1 at "
    "epochs 150/180/210), the full 50,000-image training set with crop-32/pad-4/flip augmentation, and "
    "each method's registered default hyperparameters"
)
NOT_COMPARABLE = f"{DASH} (protocol differs)"


def published_section(res: agg.Results, last: pd.DataFrame, best: pd.DataFrame,
                      teacher: dict[str, list[float]], published, catalogue: MethodCatalogue | None = None) -> str:
    grid = res.grid
    if not pub.is_cifar100(grid.dataset):
        return (f"No published numbers apply: this grid's dataset is `{grid.dataset}`, and the "
                f"reference numbers (`reports/data/cifar100_published.csv`) are CIFAR-100 results.")
    table = pub.load_published(published)
    teach = {p: float(pd.Series(v).mean()) for p, v in teacher.items() if v}
    methods = agg.method_order(grid)
    cmp = pub.compare(table, last, best, teach, grid.pairs, methods, agg.parse_pair)
    if cmp.empty:
        return ("No published CIFAR-100 number matches this grid's pairs and methods (or none of "
                "those cells has a complete run yet).")
    sdiff, tdiff = protocol_differences(res, catalogue)
    differs = any(d for runs in sdiff.values() for d in runs.values()) or \
        any(d for runs in tdiff.values() for d in runs.values())
    top = []
    if differs:
        top.append("**The protocol of this grid differs from the published one**, so Δ is not printed for "
                   f"the cells whose runs differ (`{NOT_COMPARABLE}`): those numbers stand side by side "
                   f"for reference only. The published numbers were made under {PROTOCOL_TEXT}. "
                   "The differences, read from the run records (\"not recorded\": a record lacks the "
                   "field, so the run cannot be shown to match):")
        top.append(_diff_table(sdiff, tdiff))
    else:
        top.append(f"Every run here used the published protocol ({PROTOCOL_TEXT}), as its record shows: "
                   "Δ is printed for every cell.")

    sources = list(dict.fromkeys(cmp["source"]))
    protocols = list(dict.fromkeys(cmp["protocol"]))
    headers = ["pair", "method", "ours (last)", "ours (best)", "published", "published convention",
               "Δ (ours − published)", "source"]
    rows = []
    for _, r in cmp.iterrows():
        n = "" if r["n"] is None or pd.isna(r["n"]) else f" ({int(r['n'])})"
        last_s, best_s = f"{r['ours_last']:.2f}{n}", f"{r['ours_best']:.2f}{n}"
        if r["method"] == "teacher":
            best_s = last_s = f"{r['ours_last']:.2f}"
            bad = any(tdiff.get(r["pair"], {}).values())
        else:
            bad = any(sdiff.get((r["method"], r["pair"]), {}).values())
        if bad:
            diff = NOT_COMPARABLE
        else:
            epoch = pub.epoch_convention(r["protocol"])
            diff = fmt_signed(r["diff"]) + {"best": " (vs best)", "last": "",
                                            "not stated": " (vs last; epoch not stated)"}[epoch]
        conv = f"{esc(pub.convention(r['protocol']))} [{chr(ord('a') + protocols.index(r['protocol']))}]"
        rows.append([pair_label(r["pair"]), r["method"], last_s, best_s, f"{r['published']:.2f}",
                     conv, diff, f"[{sources.index(r['source']) + 1}]"])
    notes = ["Ours: mean top-1 over complete seeds (n). Published convention: which epoch the published "
             "number is (last or best) and over how many runs, as its source states; Δ is taken against "
             "our number with the same convention: last-epoch unless the cell says *(vs best)*."]
    notes += [f"[{i + 1}] {esc(s)}" for i, s in enumerate(sources)]
    notes += [f"[{chr(ord('a') + i)}] {esc(p)}" for i, p in enumerate(protocols)]
    pairs_models = {agg.parse_pair(p) for p in grid.pairs}
    here = table[[(t, s) in pairs_models for t, s in zip(table["teacher"], table["student"])]]
    only = sorted(set(here["method"]) - set(methods) - {"teacher"})
    if only:
        notes.append(f"Published only (not shown: this grid does not run them): {', '.join(only)}.")
    return ("\n\n".join(top) + "\n\n"
            + md_table(headers, rows, ["left", "left"] + ["right"] * 3 + ["left", "right", "left"])
            + "\n\n" + "\n\n".join(notes))


# ---------------------------------------------------------------------------- teachers
def _recipe_summary(recipe: dict) -> str:
    parts = []
    if recipe.get("batch_size") is not None:
        parts.append(f"batch {recipe['batch_size']}")
    if recipe.get("lr") is not None:
        parts.append(f"lr {proto.fmt_value(recipe['lr'])}")
    if recipe.get("lr_decay_epochs"):
        rate = recipe.get("lr_decay_rate")
        parts.append(f"×{proto.fmt_value(rate) if rate is not None else '?'} at "
                     + "/".join(str(e) for e in recipe["lr_decay_epochs"]))
    if recipe.get("weight_decay") is not None:
        parts.append(f"wd {proto.fmt_value(recipe['weight_decay'])}")
    return ", ".join(parts)


def grid_teacher_recipe(grid: agg.Grid, teacher: str) -> tuple[dict, int | None]:
    """The teacher recipe and seed that grid.json's config implies (for records that lack them)."""
    cfg = grid.config or {}
    if not isinstance(cfg.get("train"), dict):
        return {}, None
    try:
        recipe = teacher_recipe(cfg, teacher).as_dict()
    except Exception:
        recipe = {}
    seed = cfg.get("teacher_seed")
    return recipe, seed if isinstance(seed, int) and not isinstance(seed, bool) else None


def imported_file(info: dict) -> str | None:
    """An imported teacher's checkpoint as ``folder/file`` (RepDistiller names every teacher
    ``ckpt_epoch_240.pth``: its folder, ``resnet56_vanilla``, is what tells them apart), from the record's
    ``path``; the bare ``file`` when no path was recorded."""
    path = info.get("path")
    if path:
        parts = [x for x in str(path).replace("\\", "/").split("/") if x]
        return "/".join(parts[-2:]) if parts else None
    return info.get("file") or None


def teacher_description(info: dict, fallback: tuple[dict, int | None] = ({}, None)) -> str:
    """Who made a teacher, from a record's ``teacher_info`` (older records lack some fields:
    a kdbench-trained teacher's recipe and seed then come from ``fallback``, grid.json's, and say so)."""
    source = info.get("source")
    if source == "imported":
        sha = info.get("weights_sha")
        where = imported_file(info)
        out = "imported: " + (f"`{esc(where)}`" if where else "file not recorded")
        out += f" as {esc(info['arch'])}" if info.get("arch") else ", architecture not recorded"
        out += f", weights sha256 `{str(sha)[:12]}`" if sha else ", weights hash not recorded"
        return out
    if source in ("trained", "cache"):
        recipe = info.get("recipe") if isinstance(info.get("recipe"), dict) else {}
        seed = info.get("seed")
        from_grid = []
        if not recipe and fallback[0]:
            recipe = fallback[0]
            from_grid.append("recipe")
        if seed is None and fallback[1] is not None:
            seed = fallback[1]
            from_grid.append("seed")
        epochs = info.get("epochs", recipe.get("epochs"))
        bits = [f"{epochs} epochs" if epochs is not None else "epochs not recorded",
                f"seed {seed}" if seed is not None else "seed not recorded"]
        summary = _recipe_summary(recipe)
        bits.append(summary if summary else "recipe not recorded")
        where = " (loaded from the teacher cache)" if source == "cache" else ""
        out = f"trained by kdbench{where}: " + ", ".join(bits)
        if from_grid:
            out += f" ({' and '.join(from_grid)} from grid.json: the records do not carry them)"
        return out
    return "source not recorded"


def _teacher_id(info: dict) -> str:
    for k in ("key", "weights_sha", "path"):
        if info.get(k):
            return str(info[k])
    return "?"


def teacher_groups(res: agg.Results) -> dict[str, list[tuple[str, dict, list[str]]]]:
    """Per grid pair, the distinct teachers its in-grid records name: (id, teacher_info, run ids)."""
    out: dict[str, list] = {}
    g = res.in_grid
    for p in res.grid.pairs:
        groups: dict[str, list] = {}
        for r in g[g["pair"] == p].itertuples():
            info = _dicts(r.teacher_info)
            if not info:
                continue
            tid = _teacher_id(info)
            groups.setdefault(tid, [tid, info, []])[2].append(r.run_id)
        out[p] = [tuple(v) for v in groups.values()]
    return out


def teacher_warnings(groups: dict) -> list[str]:
    out = []
    for p, gs in groups.items():
        if len(gs) > 1:
            which = ", ".join(f"`{esc(tid)}` ({plural(len(rids), 'run')})" for tid, _, rids in gs)
            out.append(f"> **WARNING: pair {pair_label(p)} mixes {len(gs)} different teachers** ({which}): "
                       "its rows compare students distilled from different teachers, and its numbers "
                       "should not be read as one cell.")
    return out


def teacher_section(res: agg.Results, groups: dict) -> str:
    rows = []
    for p in res.grid.pairs:
        t, _ = agg.parse_pair(p)
        gs = groups.get(p) or []
        if not gs:
            rows.append([pair_label(p), t, "no record names it", DASH, DASH])
        for tid, info, rids in gs:
            top1 = agg._num(info.get("top1"))
            # the pair's teacher is the architecture the grid loaded the weights into (older records lack "arch")
            described = teacher_description({**info, "arch": info.get("arch") or t}, grid_teacher_recipe(res.grid, t))
            rows.append([pair_label(p), t, described, _f(top1, ".2f"), f"`{esc(tid)}`"])
    return md_table(["pair", "teacher", "made by", "test top-1", "key"], rows,
                    ["left", "left", "left", "right", "left"])


def teacher_reference_note(res: agg.Results, groups: dict) -> str:
    """The preset's ``[teacher_reference]`` (the published range of comparable networks on this data) and where
    each teacher falls in it; empty for a grid without one."""
    ref = (res.grid.config or {}).get("teacher_reference")
    if not isinstance(ref, dict) or not set(REFERENCE_KEYS) <= set(ref):
        return ""
    lo, hi = float(ref["min_top1"]), float(ref["max_top1"])
    where = []
    for p in res.grid.pairs:
        for _, info, _ in groups.get(p) or []:
            top1 = agg._num(info.get("top1"))
            if math.isnan(top1):
                continue
            place = "within" if lo <= top1 <= hi else ("above" if top1 > hi else "**BELOW**")
            where.append(f"{esc(info.get('arch') or agg.parse_pair(p)[0])} {top1:.2f}% ({place})")
    return (f" Published test top-1 of comparable networks on this data: {lo:g}–{hi:g}% ({esc(ref['source'])})"
            + (f"; here: {', '.join(dict.fromkeys(where))}." if where else "."))


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


def fmt_bytes(x: float) -> str:
    """Bytes in binary units: 512 B, 12.5 KiB, 2.31 MiB, 1.20 GiB."""
    if x is None or math.isnan(x):
        return DASH
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(x) >= size:
            return f"{x / size:.{1 if unit == 'KiB' else 2}f} {unit}"
    return f"{x:.0f} B"


COST_FOOTNOTE = (
    "Averages over each method's complete runs (all pairs). ¹ Epoch time: the run's own training steps plus "
    "its share of its cohort's shared work (drawing and augmenting the batches, the teacher's forward pass), "
    "split evenly among the cohort's runs that finished the epoch; evaluation excluded. images/s: training "
    "images over that time. Memory, counted exactly per run: params = bytes of the student's parameters and "
    "of the method's own modules (adapters, embeddings); optimizer state = SGD's momentum buffers (student "
    "and method, pre-training stages included); buffers = BN statistics and the method's buffers (CRD's "
    "memory banks). Extra trainable params = the method's own parameters that join the optimizer, beyond "
    f"the student. {DASH}: not in the record (written before these fields were kept).")
CUDA_FOOTNOTE = (
    " ² CUDA: the peak allocated memory during the run's own steps (it includes what the teacher and the "
    "cohort's other students hold), and the largest rise within one step (the run's activations, gradients "
    "and temporaries).")
VIEWS_FOOTNOTE = (
    "\n\nMethods with a forward-passes entry train on other views of each batch (MLKD: a strong RandAugment "
    "view): a different augmentation protocol from the other rows, and one more student and teacher pass "
    "per view.")


def _cost_row(m: str, r, with_cuda: bool, with_views: bool) -> list[str]:
    row = [m, str(int(r["runs"])), _f(r["epoch_time_s"], ".2f"), _f(r["images_per_s"], ",.0f"),
           fmt_bytes(r["student_param_bytes"]), fmt_bytes(r["method_param_bytes"]),
           fmt_bytes(r["optimizer_state_bytes"]), fmt_bytes(r["buffer_bytes"])]
    if with_cuda:
        row += [_f(r["cuda_peak_mb"], ",.0f"), _f(r["cuda_step_mb"], ",.0f")]
    row += [fmt_params(r["extra_params"]), fmt_duration(r["time_s"]), fmt_duration(r["time_total_s"])]
    if with_views:
        n = 1 + len(r["views"].split(", ")) if r["views"] else 1
        row.append(f"{n} student + {n} teacher ({r['views']} view)" if r["views"] else "")
    return row


def cohort_memory_section(res: agg.Results) -> str:
    """The CPU runs' process peak RSS, once per cohort (it is the cohort's, not any one method's)."""
    cohorts = agg.cohort_memory_table(res)
    if cohorts.empty:
        return ""
    rows = [[esc(str(r.pair)), _num_or_blank(r.seed), esc(r.methods), _f(r.peak_rss_mb, ",.0f")
             + ("" if r.scope == "cohort" else f" {DAGGER}")] for r in cohorts.itertuples()]
    note = (f" {DAGGER}: the peak could not be reset before the cohort, so it covers the process since it "
            "started." if (cohorts["scope"] != "cohort").any() else "")
    return ("\n\n**Process peak memory per cohort (CPU)**\n\n"
            + md_table(["pair", "seed", "methods (one cohort)", "process peak RSS (MB)"], rows,
                       ["left", "right", "left", "right"])
            + "\n\nThe training process's peak resident memory while the cohort trained (teacher, data and "
              "every student of the cohort together): one figure per cohort, not a cost of any one method." + note)


def cost_section(res: agg.Results, cost: pd.DataFrame) -> str:
    if cost.empty or cost["runs"].sum() == 0:
        return "_No complete runs: no cost figures._"
    with_cuda = bool(cost["cuda_peak_mb"].notna().any())
    with_views = "views" in cost and cost["views"].astype(bool).any()
    headers = ["method", "runs", "epoch time (s)¹", "images/s¹", "student params", "method params",
               "optimizer state", "buffers"]
    headers += ["peak CUDA memory (MB)²", "CUDA step memory (MB)²"] if with_cuda else []
    headers += ["extra trainable params", "total time / run", "total time (all runs)"]
    headers += ["forward passes / step"] if with_views else []
    rows = [_cost_row(m, r, with_cuda, with_views) for m, r in cost.iterrows()]
    return (md_table(headers, rows) + "\n\n" + COST_FOOTNOTE + (CUDA_FOOTNOTE if with_cuda else "")
            + (VIEWS_FOOTNOTE if with_views else "") + cohort_memory_section(res))


def _num_or_blank(x) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{int(x)}"


def inventory_section(res: agg.Results) -> str:
    runs = res.runs
    g = runs[runs["in_grid"]]
    c = res.counts()
    # "not applicable" only where a grid has such runs: older reports keep their exact line
    shown = [s for s in agg.STATUSES if s != "not_applicable" or c[s]]
    parts = [", ".join(f"{c[s]} {s.replace('_', ' ')}" for s in shown) + f" (of {c['expected']} expected)"
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
        parts.append("**Corrupt records** (unreadable JSON, or a record of another schema version)\n\n"
                     + md_table(["run", "error"], rows, ["left", "left"]))
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


# ---------------------------------------------------------------------------- sweeps and tuning
def _values_label(label: str, method: str, sweep: dict) -> str:
    """A row of a method's sensitivity table: its swept values (``T=2``), or the method's own values."""
    return label[len(method) + 1:-1] if sweep and label.startswith(f"{method}[") else "(not swept)"


def _val_cell(mean: float, std: float, n: int) -> str:
    return fmt_cell(mean, std, n) if n else DASH


def sensitivity_section(res: agg.Results, last: pd.DataFrame, val: pd.DataFrame | None) -> str:
    """Per swept method: its test top-1 (last epoch) against each swept value, per pair; with a validation
    split, the validation top-1 beside it."""
    g = res.grid
    sweeps = g.sweep_of()
    parts = []
    for m in ([agg.VANILLA] if agg.VANILLA in g.methods else []) + [m for m in g.methods if m != agg.VANILLA]:
        labels = g.labels(m)
        if labels == [m]:
            continue
        headers = ["value"] + [pair_label(p) for p in g.pairs]
        rows = []
        for label in labels:
            row = [esc(_values_label(label, m, sweeps.get(label, {})))]
            for p in g.pairs:
                st = last.loc[(label, p)]
                cell = fmt_cell(st["mean"], st["std"], int(st["n"]))
                if val is not None:
                    v = val.loc[(label, p)]
                    cell += f" · val {_val_cell(v['mean'], v['std'], int(v['n']))}"
                row.append(cell)
            rows.append(row)
        parts.append(f"**{m}**\n\n" + md_table(headers, rows))
    if not parts:
        return "_No sweeps in this grid (`--sweep`)._"
    what = "test top-1 (%) at the last epoch" + (" · val = validation top-1 (%) at the last epoch, the number "
                                                  "the tuned table chooses on" if val is not None else "")
    return "\n\n".join(parts) + f"\n\nCells: {what}; mean ± sample std over seeds (n)."


def tuned_section(res: agg.Results, teacher: dict[str, list[float]]) -> str:
    """Each method at its best swept value, chosen on the validation split; one line saying why not without one."""
    g = res.grid
    if not g.val_fraction:
        return ("_No tuned table: this grid has no validation split (`--val-fraction`), and choosing each "
                "method's value on the test set would overstate it._")
    choice = agg.tuned_choice(res)
    marks = {p: agg.best_and_indistinguishable(choice.xs(p, level="pair")) for p in g.pairs}
    parts = []
    for title, pairs in _pair_groups(g):
        headers = ["method"] + [pair_label(p) for p in pairs]
        rows = [["teacher"] + [_teacher_cell(teacher.get(p, [])) for p in pairs]]
        for m in dict.fromkeys(choice.index.get_level_values("method")):
            row = [m]
            for p in pairs:
                st = choice.loc[(m, p)]
                cell = fmt_cell(st["mean"], st["std"], int(st["n"]))
                best, dag = marks[p]
                if m in best:
                    cell = f"**{cell}**"
                elif m in dag:
                    cell = f"{cell}{DAGGER}"
                if st["label"] and st["label"] != m:
                    cell += f" [{esc(st['label'][len(m) + 1:-1])}]"
                row.append(cell)
            rows.append(row)
        parts.append(f"**{title}**\n\n" + md_table(headers, rows))
    return ("\n\n".join(parts) + "\n\n"
            f"Each method at the swept value (in brackets) with the highest mean validation top-1 at the last "
            f"epoch over seeds, per pair (validation split: {g.val_fraction:g} of the training set, held out, never "
            f"trained on; the first value in sweep order on a tie); the cell is that value's test top-1 (last "
            f"epoch), which played no part in the choice. Marks as in table 1.")
