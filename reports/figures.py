"""PNG figures of a report (matplotlib Agg canvas, seaborn styling; no pyplot state)."""
from __future__ import annotations

import hashlib
import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
import scikit_posthocs as sp
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from seaborn.external import husl

from benchmarks.config import list_presets, load_preset
from methods import list_methods, modified_methods

from . import aggregate as agg
from . import significance as sig

__all__ = ["FigureResult", "make_figures", "FIGURE_FILES", "DPI", "method_color", "palette", "make_palette",
           "heatmap_scale", "nemenyi", "nemenyi_differences"]

DPI = 120
FIGURE_FILES = {
    "bars": "top1_bars.png",
    "heatmap": "gain_heatmap.png",
    "curves": "test_curves.png",
    "cost": "gain_vs_cost.png",
    "fidelity": "top1_vs_agreement.png",
    "cd": "critical_difference.png",
}
PAIR_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p", "8", "d")
_RC = {
    "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
    "xtick.labelsize": 8, "ytick.labelsize": 8, "figure.titlesize": 11,
    "svg.hashsalt": "kdbench", "figure.dpi": DPI, "savefig.dpi": DPI,
}


@dataclass
class FigureResult:
    key: str
    file: str  # relative to results_dir
    title: str
    caption: str
    made: bool
    note: str = ""  # why it was skipped


@contextmanager
def _style():
    with sns.axes_style("whitegrid"), mpl.rc_context(_RC):
        yield


def _new_fig(w: float, h: float) -> Figure:
    fig = Figure(figsize=(w, h), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # no "Software"/date chunks: the same records give the same bytes
    fig.savefig(path, dpi=DPI, format="png", metadata={"Software": None})


# ---------------------------------------------------------------------------- colours
def make_palette(n: int) -> tuple[tuple[float, float, float], ...]:
    """n colours: HUSL hues 360/n degrees apart, lightness alternating 50/72 (saturation 90). With 20 (the
    least we use) the closest two are 23.9 apart in CIELUV (tab20's closest two: 21.4); more colours stay
    distinct but come closer, so a figure of many methods also names them in its legend."""
    return tuple(tuple(float(c) for c in husl.husl_to_rgb(15 + 360 / n * i, 90, (50, 72)[i % 2])) for i in range(n))


@lru_cache(maxsize=1)
def _reserved() -> tuple[tuple[tuple[float, float, float], ...], dict[str, int]]:
    """The palette and the slots of the names that must never share a colour: every registered method,
    every ``<method>+kd``, every ``<method>+<modifier>`` it declares (``kd+ls``) and every composition a
    preset runs (``crd+kd``). The palette has room for all of them plus 8 free slots (at least 20); each
    takes its hash slot, or the next free one (names in sorted order): collisions among them are
    impossible by construction, and the colours depend on the registry and presets, never on a grid's
    methods."""
    names = set(list_methods())
    names |= {f"{m}+kd" for m in list_methods() if m not in ("kd", "vanilla")}
    names |= set(modified_methods())
    for preset in list_presets():
        try:
            names |= {str(m) for m in load_preset(preset).get("methods", [])}
        except Exception:  # a broken preset must not break a report
            continue
    colours = make_palette(max(20, len(names) + 8))
    taken: dict[int, str] = {}
    out = {}
    for name in sorted(names):
        slot = _hash_slot(name, len(colours))
        while slot in taken:
            slot = (slot + 1) % len(colours)
        taken[slot] = name
        out[name] = slot
    return colours, out


def _hash_slot(name: str, n: int) -> int:
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big") % n


def method_color(name: str) -> tuple[float, float, float]:
    """The RGB colour of method ``name`` in every figure of every report.

    A registered method (or composition, see ``_reserved``) has its own slot; any other name takes
    the first slot from its hash that no reserved name holds (two such names in one grid may share a
    colour).
    """
    colours, reserved = _reserved()
    if name in reserved:
        return colours[reserved[name]]
    used = set(reserved.values())
    slot = _hash_slot(name, len(colours))
    for k in range(len(colours)):
        if (slot + k) % len(colours) not in used:
            return colours[(slot + k) % len(colours)]
    return colours[slot]


def palette(methods: list[str]) -> dict[str, tuple]:
    """Method -> colour; a method's colour does not depend on which other methods are listed."""
    return {m: method_color(m) for m in methods}


def _facet_grid(n: int, max_cols: int = 3) -> tuple[int, int]:
    ncols = min(n, max_cols)
    return math.ceil(n / ncols), ncols


def _rotate(ax, labels: list[str], axis: str = "x") -> None:
    long = sum(len(s) for s in labels) > 28 or max((len(s) for s in labels), default=0) > 8
    if axis == "x":
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=35 if long or len(labels) > 4 else 0,
                           ha="right" if long or len(labels) > 4 else "center", rotation_mode="anchor")


def _pair_title(pair: str) -> str:
    t, s = agg.parse_pair(pair)
    kind = "same arch" if agg.is_same_arch(t, s) else "cross arch"
    return f"{t} → {s}\n({kind})"


# ---------------------------------------------------------------------------- bar chart
def bars_figure(res: agg.Results, stats: pd.DataFrame, teacher: dict, pal: dict) -> Figure | str:
    methods = agg.method_order(res.grid)
    pairs = [p for p in res.grid.pairs if stats.xs(p, level="pair")["n"].sum() > 0]
    if not pairs:
        return "no complete runs"
    done = res.complete.dropna(subset=["top1_last"])
    nrows, ncols = _facet_grid(len(pairs), 3 if len(methods) <= 6 else 2)
    fw = max(2.8, 0.42 * len(methods) + 1.3)
    fig = _new_fig(fw * ncols + 1.5, 3.1 * nrows + 0.6)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, p in zip(axes.flat, pairs):
        col = stats.xs(p, level="pair").reindex(methods)
        lo, hi = [], []
        for i, m in enumerate(methods):
            mean, std, n = col.at[m, "mean"], col.at[m, "std"], col.at[m, "n"]
            if n == 0:
                continue
            ax.bar(i, mean, width=0.7, color=pal[m], edgecolor="black", linewidth=0.5, zorder=2, gid=m)
            if not math.isnan(std):
                ax.errorbar(i, mean, yerr=std, fmt="none", ecolor="black", capsize=4, lw=1, zorder=3)
                lo.append(mean - std)
                hi.append(mean + std)
            ys = done.loc[(done["method"] == m) & (done["pair"] == p), "top1_last"].to_numpy()
            xs = i + (np.linspace(-0.17, 0.17, len(ys)) if len(ys) > 1 else np.zeros(len(ys)))
            ax.scatter(xs, ys, s=12, color="white", edgecolor="black", linewidth=0.6, zorder=4)
            lo += [mean, *ys]
            hi += [mean, *ys]
        tv = teacher.get(p) or []
        if tv:
            tmean = float(np.mean(tv))
            ax.axhline(tmean, ls="--", color="0.35", lw=1, zorder=1)
            hi.append(tmean)
        span = max(hi) - min(lo)
        pad = max(0.12 * span, 0.5)
        ax.set_ylim(min(lo) - pad, max(hi) + pad)
        ax.set_xlim(-0.6, len(methods) - 0.4)
        _rotate(ax, methods)
        ax.set_title(_pair_title(p))
        ax.grid(axis="x", visible=False)
    for ax in axes[:, 0]:
        ax.set_ylabel("top-1, last epoch (%)")
    for ax in list(axes.flat)[len(pairs):]:
        ax.set_visible(False)
    handles = [
        Line2D([], [], ls="--", color="0.35", label="teacher"),
        Line2D([], [], marker="o", ls="none", markerfacecolor="white", markeredgecolor="black",
               markersize=4, label="one seed"),
        Line2D([], [], color="black", marker="_", markersize=8, label="± std over seeds"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, frameon=False)
    fig.suptitle("Student top-1 by method, last epoch\n(bars = mean over seeds; y-axis does not start at 0)")
    return fig


# ---------------------------------------------------------------------------- heatmap
HEATMAP_RULE = ("Colour scale: diverging, centred at 0, clipped at ±L where L is the smaller of the "
                "largest |gain| and max(2 × the 75th percentile of |gain| over the cells, 1 pp), so that one "
                "outlier does not wash out the rest; a cell beyond ±L is marked * and shows its true value.")
CLIP_MARK = "*"


def heatmap_scale(values) -> tuple[float, np.ndarray]:
    """(L, clipped): the colour limit of the gain heatmap (``HEATMAP_RULE``) and which cells exceed it."""
    v = np.asarray(values, dtype=float)
    a = np.abs(v[np.isfinite(v)])
    if a.size == 0 or a.max() == 0:
        return 1.0, np.zeros(v.shape, dtype=bool)
    lim = float(min(a.max(), max(2.0 * np.percentile(a, 75), 1.0)))
    with np.errstate(invalid="ignore"):
        clipped = np.isfinite(v) & (np.abs(v) > lim + 1e-12)
    return lim, clipped


def _gain_label(v: float, clipped: bool) -> str:
    if pd.isna(v):
        return ""
    return f"{0.0 if abs(v) < 0.005 else v:+.2f}" + (CLIP_MARK if clipped else "")


def _heatmap_note(means: pd.DataFrame) -> str:
    gains = agg.gain_table(means, agg.VANILLA)
    if gains is None:
        return ""
    vals = gains.drop(index=agg.VANILLA).to_numpy(dtype=float)
    if not np.isfinite(vals).any():
        return ""
    lim, clipped = heatmap_scale(vals)
    k = int(clipped.sum())
    return f" Here L = {lim:.2f} pp; {k} cell{'' if k == 1 else 's'} beyond it."


def heatmap_figure(means: pd.DataFrame) -> Figure | str:
    gains = agg.gain_table(means, agg.VANILLA)
    if gains is None:
        return "the grid has no vanilla row"
    gains = gains.drop(index=agg.VANILLA)
    if gains.empty or gains.isna().all().all():
        return "no pair has both a vanilla run and a distillation run complete"
    gains.columns = [agg.parse_pair(p)[0] + " →\n" + agg.parse_pair(p)[1] for p in gains.columns]
    vals = gains.to_numpy(dtype=float)
    lim, clipped = heatmap_scale(vals)
    annot = np.array([[_gain_label(vals[i, j], clipped[i, j]) for j in range(vals.shape[1])]
                      for i in range(vals.shape[0])], dtype=object)
    lo, hi = bool((clipped & (vals < 0)).any()), bool((clipped & (vals > 0)).any())
    extend = {(False, False): "neither", (True, False): "min", (False, True): "max", (True, True): "both"}[(lo, hi)]
    fig = _new_fig(max(4.5, 1.05 * gains.shape[1] + 2.6), max(2.4, 0.42 * gains.shape[0] + 1.8))
    ax = fig.add_subplot()
    label = "Δ top-1 vs vanilla (pp)" + (f"\nclipped at ±{lim:.2f}; * = beyond" if clipped.any() else "")
    with warnings.catch_warnings():  # seaborn 0.13 calls Colormap.set_bad, deprecated in mpl 3.11
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        sns.heatmap(gains.astype(float), ax=ax, annot=annot, fmt="", cmap="RdBu", center=0,
                    vmin=-lim, vmax=lim, linewidths=0.5, linecolor="white", annot_kws={"fontsize": 8},
                    cbar_kws={"label": label, "extend": extend})
    ax.set_xlabel("teacher → student")
    ax.set_ylabel("method")
    ax.tick_params(axis="x", rotation=0)
    ax.tick_params(axis="y", rotation=0)
    ax.set_title("Gain over the vanilla student\n(mean last-epoch top-1, percentage points)")
    return fig


# ---------------------------------------------------------------------------- curves
def curves_figure(res: agg.Results, teacher: dict, pal: dict) -> Figure | str:
    hist = res.history
    if hist.empty:
        return "no per-epoch history in the complete runs"
    methods = [m for m in agg.method_order(res.grid) if m in set(hist["method"])]
    pairs = [p for p in res.grid.pairs if p in set(hist["pair"])]
    first, last = int(hist["epoch"].min()), int(hist["epoch"].max())
    few = last - first + 1 <= 30  # short grids: markers on every epoch (one epoch: points, not a line)
    pad = max(0.5, 0.02 * (last - first))
    nrows, ncols = _facet_grid(len(pairs))
    fig = _new_fig(3.9 * ncols + 1.6, 3.0 * nrows + 0.7)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, p in zip(axes.flat, pairs):
        sub = hist[hist["pair"] == p]
        for m in methods:
            g = sub[sub["method"] == m].groupby("epoch")["test_top1"]
            if g.ngroups == 0:
                continue
            mean, std, cnt = g.mean(), g.std(ddof=1), g.count()
            ax.plot(mean.index, mean.to_numpy(), color=pal[m], lw=1.4, label=m, gid=m,
                    marker="o" if few else None, markersize=3.5 if g.ngroups > 1 else 6)
            ok = (cnt >= 2).to_numpy()
            if ok.any() and g.ngroups > 1:
                ax.fill_between(mean.index[ok], (mean - std)[ok], (mean + std)[ok], color=pal[m],
                                alpha=0.2, lw=0)
            elif ok.any():
                ax.errorbar(mean.index[ok], mean[ok], yerr=std[ok], fmt="none", ecolor=pal[m], capsize=4, lw=1)
        tv = teacher.get(p) or []
        if tv:
            ax.axhline(float(np.mean(tv)), ls="--", color="0.35", lw=1)
        ax.set_title(_pair_title(p))
        ax.set_xlabel("epoch")
        ax.set_xlim(first - pad, last + pad)
        ax.xaxis.set_major_locator(mpl.ticker.MaxNLocator(integer=True, min_n_ticks=1))
    for ax in axes[:, 0]:
        ax.set_ylabel("test top-1 (%)")
    for ax in list(axes.flat)[len(pairs):]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=pal[m], lw=2, marker="o" if few else None, markersize=4, label=m)
               for m in methods]
    handles.append(Line2D([], [], ls="--", color="0.35", label="teacher"))
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 5), frameon=False)
    band = "band" if last > first else "error bar"
    fig.suptitle(f"Test top-1 over training (line = mean over seeds, {band} = ± std)")
    return fig


# ---------------------------------------------------------------------------- gain vs cost
def _place_labels(ax, xs, ys, labels, colors, fontsize=9) -> None:
    """Annotate points with labels nudged apart so that no two labels (or a label and a marker) overlap."""
    fig = ax.figure
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    pts = ax.transData.transform(np.column_stack([xs, ys]))
    sizes = []
    for lab in labels:
        t = ax.text(0, 0, lab, fontsize=fontsize)
        bb = t.get_window_extent(r)
        sizes.append((bb.width, bb.height))
        t.remove()
    k = fig.dpi / 72.0
    pos = pts + np.array([5 * k, 3 * k])  # lower-left corners of the label boxes, pixels
    rad = 5 * k
    n = len(labels)
    for _ in range(400):
        moved = False
        for i in range(n):
            wi, hi = sizes[i]
            for j in range(n):  # other labels
                if j <= i:
                    continue
                wj, hj = sizes[j]
                dx = min(pos[i, 0] + wi, pos[j, 0] + wj) - max(pos[i, 0], pos[j, 0])
                dy = min(pos[i, 1] + hi, pos[j, 1] + hj) - max(pos[i, 1], pos[j, 1])
                if dx > 0 and dy > 0:
                    up_i = (pos[i, 1] + hi / 2, -i) > (pos[j, 1] + hj / 2, -j)
                    step = dy / 2 + 1
                    pos[i, 1] += step if up_i else -step
                    pos[j, 1] -= step if up_i else -step
                    moved = True
            for j in range(n):  # markers
                dx = min(pos[i, 0] + wi, pts[j, 0] + rad) - max(pos[i, 0], pts[j, 0] - rad)
                dy = min(pos[i, 1] + hi, pts[j, 1] + rad) - max(pos[i, 1], pts[j, 1] - rad)
                if dx > 0 and dy > 0:
                    pos[i, 1] += dy + 1 if pos[i, 1] + hi / 2 >= pts[j, 1] else -(dy + 1)
                    moved = True
        if not moved:
            break
    for i in range(n):
        off = (pos[i] - pts[i]) / k
        far = math.hypot(*(off - np.array([5, 3]))) > 6
        ax.annotate(labels[i], (xs[i], ys[i]), xytext=tuple(off), textcoords="offset points",
                    fontsize=fontsize, color="black", va="bottom", ha="left",
                    arrowprops=dict(arrowstyle="-", color=colors[i], lw=0.7, shrinkA=0, shrinkB=3) if far else None)


def cost_figure(res: agg.Results, means: pd.DataFrame, cost: pd.DataFrame, pal: dict) -> Figure | str:
    use_epoch = cost["epoch_time_s"].notna().any()
    xcol = "epoch_time_s" if use_epoch else "time_s"
    if not cost[xcol].notna().any():
        return "no cost data in the complete runs"
    gains = agg.gain_table(means, agg.VANILLA)
    if gains is not None:
        y = gains.mean(axis=1, skipna=True)
        ylabel = "avg Δ top-1 vs vanilla over pairs (pp)"
    else:
        y = means.mean(axis=1, skipna=True)
        ylabel = "mean top-1 over pairs (%)"
    pts = [(m, cost.at[m, xcol], y.get(m, np.nan)) for m in agg.method_order(res.grid) if m in cost.index]
    pts = [(m, x, v) for m, x, v in pts if not (math.isnan(x) or math.isnan(v))]
    if not pts:
        return "no method has both cost data and an accuracy"
    fig = _new_fig(6.4, 4.4)
    ax = fig.add_subplot()
    xs = np.array([p[1] for p in pts])
    ys = np.array([p[2] for p in pts])
    for m, x, v in pts:
        ax.scatter([x], [v], s=55, color=pal[m], edgecolor="black", linewidth=0.6, zorder=3, gid=m)
    if gains is not None:
        ax.axhline(0, color="0.4", lw=0.8, ls=":", zorder=1)
    xr = (xs.max() - xs.min()) or max(xs.max() * 0.2, 1.0)
    yr = (ys.max() - ys.min()) or max(abs(ys.max()) * 0.2, 1.0)
    ax.set_xlim(xs.min() - 0.12 * xr, xs.max() + 0.35 * xr)
    ax.set_ylim(ys.min() - 0.2 * yr, ys.max() + 0.3 * yr)
    ax.set_xlabel("mean time per epoch (s)" if use_epoch else "mean total time per run (s)")
    ax.set_ylabel(ylabel)
    ax.set_title("Accuracy gain vs training cost (one point per method)")
    _place_labels(ax, xs, ys, [p[0] for p in pts], [pal[p[0]] for p in pts])
    return fig


# ---------------------------------------------------------------------------- accuracy vs agreement
def _fidelity_points(res: agg.Results, last: pd.DataFrame, agreement: pd.DataFrame) -> list[tuple]:
    """(method, pair, mean agreement, mean last-epoch top-1) of every cell that has both, grid order."""
    pts = []
    for m in agg.method_order(res.grid):
        for p in res.grid.pairs:
            x, y = agreement.at[(m, p), "mean"], last.at[(m, p), "mean"]
            if not (math.isnan(x) or math.isnan(y)):
                pts.append((m, p, float(x), float(y)))
    return pts


def fidelity_figure(res: agg.Results, last: pd.DataFrame, agreement: pd.DataFrame, pal: dict) -> Figure | str:
    pts = _fidelity_points(res, last, agreement)
    if not pts:
        return "no complete run records its agreement with the teacher"
    pairs = list(dict.fromkeys(p for _, p, _, _ in pts))
    marker = {p: PAIR_MARKERS[i % len(PAIR_MARKERS)] for i, p in enumerate(pairs)}
    fig = _new_fig(6.4, 4.6)
    ax = fig.add_subplot()
    for m, p, x, y in pts:
        ax.scatter([x], [y], s=55, marker=marker[p], color=pal[m], edgecolor="black", linewidth=0.6, zorder=3,
                   gid=f"{m}|{p}")
    xs, ys = np.array([q[2] for q in pts]), np.array([q[3] for q in pts])
    xr, yr = (xs.max() - xs.min()) or 1.0, (ys.max() - ys.min()) or 1.0
    ax.set_xlim(xs.min() - 0.1 * xr, xs.max() + 0.1 * xr)
    ax.set_ylim(ys.min() - 0.1 * yr, ys.max() + 0.1 * yr)
    ax.set_xlabel("top-1 agreement with the teacher (%)")
    ax.set_ylabel("student top-1, last epoch (%)")
    ax.set_title("Accuracy vs agreement with the teacher\n(one point per method and pair; means over seeds)")
    methods = list(dict.fromkeys(m for m, _, _, _ in pts))
    handles = [Line2D([], [], marker="o", ls="none", markerfacecolor=pal[m], markeredgecolor="black", label=m)
               for m in methods]
    handles += [Line2D([], [], marker=marker[p], ls="none", markerfacecolor="0.8", markeredgecolor="black",
                       label=agg.parse_pair(p)[0] + " → " + agg.parse_pair(p)[1]) for p in pairs]
    fig.legend(handles=handles, loc="outside right upper", frameon=False)
    return fig


# ---------------------------------------------------------------------------- critical difference
def nemenyi(fr: sig.Friedman) -> pd.DataFrame:
    """Nemenyi post-hoc p-values (methods x methods) over the Friedman test's blocks (scikit-posthocs)."""
    return sp.posthoc_nemenyi_friedman(fr.table)


def nemenyi_differences(fr: sig.Friedman) -> list[tuple[str, str]]:
    """The (better, worse) method pairs the Nemenyi test tells apart at ``sig.ALPHA``, best rank first."""
    p = nemenyi(fr)
    order = sorted(fr.methods, key=lambda m: (fr.ranks[m], fr.methods.index(m)))
    return [(a, b) for i, a in enumerate(order) for b in order[i + 1:] if p.at[a, b] < sig.ALPHA]


def cd_figure(fr: sig.Friedman, pal: dict) -> Figure | str:
    if fr.note:
        return fr.note
    k = len(fr.methods)
    fig = _new_fig(max(5.5, 0.55 * k + 3.5), 1.1 + 0.28 * ((k + 1) // 2 + k))
    ax = fig.add_subplot()
    art = sp.critical_difference_diagram(fr.ranks, nemenyi(fr), ax=ax, color_palette={m: pal[m] for m in fr.methods},
                                         label_fmt_left="{label} ({rank:.2f})", label_fmt_right="({rank:.2f}) {label}",
                                         label_props={"fontsize": 8}, marker_props={"edgecolor": "black", "s": 30})
    ax.set_xticks(range(1, k + 1))
    ax.grid(False)
    lo, hi = ax.get_ylim()
    ax.set_ylim(lo - 0.4, hi)  # room for the lowest label's lower half
    ax.set_title(f"Average rank over {len(fr.pairs)} pairs (1 = best), last epoch; Friedman p = {fr.pvalue:.3g}\n"
                 f"bars join methods the Nemenyi test does not tell apart (\u03b1 = {sig.ALPHA})", pad=14)
    # the labels sit outside the rank range, anchored in data units: measure them (after the constrained
    # layout has placed the axes) and widen the x range by as much on either side
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    w = max(t.get_window_extent(r).width for t in art["labels"]) + 6
    px = ax.get_window_extent(r).width
    m = w * (k - 1) / max(px - 2 * w, 1.0)
    ax.set_xlim(1 - m, k + m)  # the whole rank range 1..k, and the labels' room on either side
    return fig


# ---------------------------------------------------------------------------- all
def _cd_caption(fr: sig.Friedman) -> str:
    if fr.note:
        return ""
    if fr.pvalue >= sig.ALPHA:
        return (f"The Friedman test does not reject equal performance (p = {fr.pvalue:.3g} ≥ {sig.ALPHA}): "
                "no difference between these methods is shown, whatever the bars.")
    diff = nemenyi_differences(fr)
    if not diff:
        return "Nemenyi tells no two methods apart."
    return "Nemenyi tells apart (better first): " + ", ".join(f"{a} > {b}" for a, b in diff) + "."


def make_figures(res: agg.Results, last: pd.DataFrame, teacher: dict, cost: pd.DataFrame,
                 agreement: pd.DataFrame | None = None, friedman: sig.Friedman | None = None) -> list[FigureResult]:
    methods = agg.method_order(res.grid)
    pal = palette(methods)
    means = agg.mean_table(last)
    specs = [
        ("bars", "Top-1 by method, per pair",
         "Bars: mean last-epoch top-1 over seeds; error bars: ± std; dots: single seeds; dashed: teacher.",
         lambda: bars_figure(res, last, teacher, pal)),
        ("heatmap", "Gain over vanilla",
         "Mean last-epoch top-1 of each method minus the vanilla student's, per pair (percentage points). "
         + HEATMAP_RULE + _heatmap_note(means),
         lambda: heatmap_figure(means)),
        ("curves", "Test accuracy over epochs",
         "Per-epoch test top-1 of complete runs; line: mean over seeds, band: ± std (where ≥ 2 seeds).",
         lambda: curves_figure(res, teacher, pal)),
        ("cost", "Accuracy gain vs training cost",
         "x: the method's mean time per epoch over its complete runs; y: its mean gain over vanilla "
         "across pairs (mean top-1 when there is no vanilla row).",
         lambda: cost_figure(res, means, cost, pal)),
    ]
    if agreement is not None:
        specs.append(("fidelity", "Accuracy vs agreement with the teacher",
                      "x: mean last-epoch top-1 agreement between student and teacher over seeds; y: mean "
                      "last-epoch student top-1; one point per method (colour) and pair (marker).",
                      lambda: fidelity_figure(res, last, agreement, pal)))
    if friedman is not None:
        specs.append(("cd", "Critical-difference diagram", _cd_caption(friedman),
                      lambda: cd_figure(friedman, pal)))
    out = []
    with _style():
        for key, title, caption, fn in specs:
            rel = f"figures/{FIGURE_FILES[key]}"
            path = res.results_dir / rel
            fig = fn()
            if isinstance(fig, str):
                note = fig
                if path.exists():
                    path.unlink()  # a stale figure from an earlier run would contradict the report
            else:
                note = None
                _save(fig, path)
            out.append(FigureResult(key, rel, title, caption, made=note is None, note=note or ""))
    return out
