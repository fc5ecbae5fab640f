"""Is the gain real? Tests of the last-epoch differences between methods (pure computation).

Across pairs: a Friedman test over the methods with one block per pair (``scipy.stats.friedmanchisquare``);
its Nemenyi post-hoc and critical-difference diagram come from scikit-posthocs in ``reports.figures``
(scikit-posthocs loads pyplot, statsmodels and seaborn: it stays with the figures, which are imported
only when a report is drawn).

Within a pair: each method minus a reference (vanilla, kd), seed by seed: the same seed gives both runs
the same student initialisation and data order, so the differences are paired; their mean and its 95%
t-interval.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.stats

from . import aggregate as agg

__all__ = ["ALPHA", "MIN_METHODS", "MIN_PAIRS", "Friedman", "friedman_test", "paired_differences", "interval_side"]

ALPHA = 0.05
MIN_METHODS = 3  # scipy's Friedman test needs three groups; two methods are compared within pairs
# Blocks are pairs. With N blocks the largest Friedman statistic (every block ranks the methods alike) is
# N(k - 1) on k - 1 degrees of freedom: with N = 2 its p-value stays above 0.05 for k <= 8 methods
# (k = 3: chi2 = 4, p = 0.135), so fewer than 3 pairs can never show a difference.
MIN_PAIRS = 3


@dataclass
class Friedman:
    """The Friedman test of one grid; ``note`` says why there is none ('' when there is one)."""
    methods: list[str]  # tested methods, grid order
    pairs: list[str]  # blocks, grid order
    table: pd.DataFrame  # pairs x methods: mean last-epoch top-1 over each cell's complete seeds
    ranks: pd.Series  # method -> average rank over the blocks (1 = best; ``agg.average_ranks``)
    statistic: float = float("nan")
    pvalue: float = float("nan")
    cd: float = float("nan")  # Nemenyi critical difference at ALPHA, in rank units
    all_tied: bool = False  # every pair ties every method: nothing to rank (statistic 0, p = 1)
    n_runs: int = 0  # complete runs behind the tested cells
    seeds: tuple[int, int] = (0, 0)  # fewest and most complete seeds of a tested cell
    methods_left_out: list[str] = field(default_factory=list)  # no complete run at all
    # method -> the pairs it cannot run (its runs there say "not applicable"): left out, its pairs kept
    methods_not_applicable: dict[str, list[str]] = field(default_factory=dict)
    pairs_left_out: list[str] = field(default_factory=list)  # some tested method lacks a complete run there
    note: str = ""


def friedman_test(res: agg.Results, stats: pd.DataFrame) -> Friedman:
    """Friedman test over methods, one block per grid pair where every method has a complete run.

    stats: ``agg.cell_stats`` of the metric (last-epoch top-1); a method's value in a pair is its mean
    over seeds, the same number as tables 1 and 3. A method that cannot run some pair (``not applicable``:
    FSP on unequal channels) is left out first, so that the pair, where every other method ran, stays a
    block; then methods without any complete run; then the pairs that lack one of the remaining methods.
    """
    means = agg.mean_table(stats)
    counts = stats["n"].unstack("pair").reindex(index=means.index, columns=means.columns)
    methods = [m for m in agg.method_order(res.grid) if m in means.index]
    cannot: dict[str, list[str]] = {}
    for m, p in agg.not_applicable_cells(res):
        cannot.setdefault(m, []).append(p)
    cannot = {m: [p for p in res.grid.pairs if p in cannot[m]] for m in methods if m in cannot}
    methods = [m for m in methods if m not in cannot]
    left_m = [m for m in methods if means.loc[m].isna().all()]
    methods = [m for m in methods if m not in left_m]
    pairs = [p for p in res.grid.pairs if p in means.columns and methods and means.loc[methods, p].notna().all()]
    left_p = [p for p in res.grid.pairs if p not in pairs]
    table = means.loc[methods, pairs].T if methods else pd.DataFrame(index=pairs, columns=methods, dtype=float)
    out = Friedman(methods=methods, pairs=pairs, table=table, ranks=pd.Series(dtype=float),
                   methods_left_out=left_m, methods_not_applicable=cannot, pairs_left_out=left_p)
    if len(methods) < MIN_METHODS:
        out.note = (f"not tested: {len(methods)} method{'' if len(methods) == 1 else 's'} with complete runs, "
                    f"the Friedman test needs at least {MIN_METHODS}")
        return out
    if len(pairs) < MIN_PAIRS:
        out.note = (f"not tested: {len(pairs)} pair{'' if len(pairs) == 1 else 's'} where every method has a "
                    f"complete run, the Friedman test needs at least {MIN_PAIRS} (one block per pair)")
        return out
    n = counts.loc[methods, pairs].to_numpy(dtype=int)
    out.n_runs, out.seeds = int(n.sum()), (int(n.min()), int(n.max()))
    out.ranks = agg.average_ranks(table.T)["avg_rank"]
    k, blocks = len(methods), len(pairs)
    out.all_tied = bool((table.nunique(axis=1) == 1).all())
    if out.all_tied:  # scipy's statistic is 0/0 here; no method is ahead anywhere
        out.statistic, out.pvalue = 0.0, 1.0
    else:
        r = scipy.stats.friedmanchisquare(*(table[m].to_numpy(dtype=float) for m in methods))
        out.statistic, out.pvalue = float(r.statistic), float(r.pvalue)
    q = float(scipy.stats.studentized_range.ppf(1 - ALPHA, k, np.inf)) / math.sqrt(2)
    out.cd = q * math.sqrt(k * (k + 1) / (6 * blocks))
    return out


def paired_differences(res: agg.Results, reference: str, metric: str = "top1_last") -> pd.DataFrame | None:
    """Per (method, pair): the seed-by-seed differences method − reference over the seeds where both have
    a complete run: n, mean, std (ddof = 1), lo and hi of the 95% t-interval (NaN below 2 seeds).

    None when the grid has no ``reference`` row. Index: (method, pair), grid order, reference excluded.
    """
    if reference not in res.grid.methods:
        return None
    done = res.complete.dropna(subset=[metric])
    rows = []
    for m in agg.method_order(res.grid):
        if m == reference:
            continue
        for p in res.grid.pairs:
            sub = done[done["pair"] == p]
            ref = dict(zip(sub.loc[sub["method"] == reference, "seed"], sub.loc[sub["method"] == reference, metric]))
            mine = dict(zip(sub.loc[sub["method"] == m, "seed"], sub.loc[sub["method"] == m, metric]))
            d = np.array([mine[s] - ref[s] for s in res.grid.seeds if s in mine and s in ref], dtype=float)
            n = len(d)
            mean = float(d.mean()) if n else float("nan")
            std = float(d.std(ddof=1)) if n >= 2 else float("nan")
            half = agg.t_quantile(n - 1) * std / math.sqrt(n) if n >= 2 else float("nan")
            rows.append({"method": m, "pair": p, "n": n, "mean": mean, "std": std,
                         "lo": mean - half, "hi": mean + half})
    return pd.DataFrame(rows, columns=["method", "pair", "n", "mean", "std", "lo", "hi"]).set_index(["method", "pair"])


def interval_side(n: int, lo: float, hi: float) -> int:
    """+1 when a paired difference's 95% interval lies above 0, -1 when below, 0 when it holds 0 or there is
    no interval (fewer than 2 seeds): "beyond seed noise" in section 9's bold cells and in the summary."""
    if n < 2 or math.isnan(lo) or math.isnan(hi):
        return 0
    return 1 if lo > 0 else -1 if hi < 0 else 0
