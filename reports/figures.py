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
from matplotlib.font_manager import FontProperties
from matplotlib.lines import Line2D
from seaborn.external import husl

from kdcore.config import list_presets, load_preset
from kdcore import MethodCatalogue

from . import aggregate as agg
from . import significance as sig
from . import tables

__all__ = ["FigureResult", "make_figures", "FIGURE_FILES", "DPI", "method_color", "palette", "make_palette",
           "method_markers", "pair_styles", "heatmap_scale", "nemenyi", "nemenyi_differences", "MAX_FIGURE_PX"]

DPI = 120
# no side of a saved figure is longer (about 17 in at DPI): a large grid wraps into rows of panels and
# columns of legend entries instead of growing a strip as wide as its method list
MAX_FIGURE_PX = 2000
FIGURE_FILES = {
    "bars": "top1_bars.png",
    "heatmap": "gain_heatmap.png",
    "curves": "test_curves.png",
    "cost": "gain_vs_cost.png",
    "fidelity": "top1_vs_agreement.png",
    "cd": "critical_difference.png",
}
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


def _fit(fig: Figure, text: str, size_pt: float, margin_in: float = 0.2) -> str:
    """``text`` with each of its lines wrapped at spaces to the figure's width less ``margin_in``, measured
    in the font it is drawn in: a title never runs past the edges of a narrow figure."""
    renderer = fig.canvas.get_renderer()
    prop = FontProperties(size=size_pt)
    room = (fig.get_size_inches()[0] - margin_in) * fig.dpi

    def width(s: str) -> float:
        return renderer.get_text_width_height_descent(s, prop, ismath=False)[0]

    out = []
    for line in text.split("\n"):
        current = ""
        for word in line.split(" "):
            trial = f"{current} {word}" if current else word
            if current and width(trial) > room:
                out.append(current)
                current = word
            else:
                current = trial
        out.append(current)
    return "\n".join(out)


def _suptitle(fig: Figure, text: str) -> None:
    fig.suptitle(_fit(fig, text, mpl.rcParams["figure.titlesize"]))


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


def reserved_names(catalogue: MethodCatalogue | None) -> frozenset[str]:
    """The names that must never share a colour: the catalogue's (every registered method, every
    ``<method>+kd``, every ``<method>+<modifier>`` it declares) and every composition a preset runs
    (``crd+kd``). Without a catalogue, the presets' names alone. Read on every call: a method registered
    later in the process (a user's file, a guide's example) counts from then on."""
    names = set(catalogue.names()) if catalogue is not None else set()
    return frozenset(names | _preset_method_names())


@lru_cache(maxsize=1)
def _preset_method_names() -> frozenset[str]:
    names: set[str] = set()
    for preset in list_presets():
        try:
            names |= {str(m) for m in load_preset(preset).get("methods", [])}
        except Exception:  # a broken preset must not break a report
            continue
    return frozenset(names)


@lru_cache(maxsize=4)
def _reserved(names: frozenset[str]) -> tuple[tuple[tuple[float, float, float], ...], dict[str, int]]:
    """The palette and the slots of the reserved ``names`` (``reserved_names``). The palette has room for
    all of them plus 8 free slots (at least 20); each takes its hash slot, or the next free one (names in
    sorted order): collisions among them are impossible by construction, and the colours depend on the
    registry and presets, never on a grid's methods."""
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


def method_color(name: str, catalogue: MethodCatalogue | None = None) -> tuple[float, float, float]:
    """The RGB colour of method ``name`` in every figure of every report.

    A registered method (or composition, see ``_reserved``) has its own slot; any other name takes
    the first slot from its hash that no reserved name holds (two such names in one grid may share a
    colour).
    """
    colours, reserved = _reserved(reserved_names(catalogue))
    if name in reserved:
        return colours[reserved[name]]
    used = set(reserved.values())
    slot = _hash_slot(name, len(colours))
    for k in range(len(colours)):
        if (slot + k) % len(colours) not in used:
            return colours[(slot + k) % len(colours)]
    return colours[slot]


MIN_COLOUR_DISTANCE = 30.0  # CIELUV: two method colours closer than this differ in marker too
METHOD_MARKERS = ("o", "s", "D", "^", "v", "P", "X", "*", "<", ">", "h", "p")


def _luv(rgb) -> tuple[float, float, float]:
    return tuple(husl.xyz_to_luv(husl.rgb_to_xyz(tuple(rgb))))


def method_markers(methods: list[str], pal: dict[str, tuple]) -> dict[str, str]:
    """Method -> marker, for a panel that tells methods apart by their points alone: in list order, each
    method takes the first marker that no earlier method of a colour closer than ``MIN_COLOUR_DISTANCE``
    holds (the colour stays ``method_color``'s). 31 methods of the default grid need 4 markers."""
    out: dict[str, str] = {}
    for m in methods:
        c = _luv(pal[m])
        for k in METHOD_MARKERS:
            if all(math.dist(c, _luv(pal[o])) >= MIN_COLOUR_DISTANCE for o, ko in out.items() if ko == k):
                out[m] = k
                break
        else:
            out[m] = METHOD_MARKERS[len(out) % len(METHOD_MARKERS)]
    return out


def palette(methods: list[str], catalogue: MethodCatalogue | None = None) -> dict[str, tuple]:
    """Method -> colour; a method's colour does not depend on which other methods are listed."""
    return {m: method_color(m, catalogue) for m in methods}


def _pair_title(pair: str) -> str:
    t, s = agg.parse_pair(pair)
    kind = "same arch" if agg.is_same_arch(t, s) else "cross arch"
    return f"{t} → {s}\n({kind})"


# ---------------------------------------------------------------------------- bar chart
def _wrap(n: int, max_cols: int) -> tuple[int, int]:
    """(rows, cols) of n panels: at most max_cols a row, and the rows as evenly filled as that allows."""
    rows = math.ceil(n / min(n, max_cols))
    return rows, math.ceil(n / rows)


def _axis_start(low: float, high: float) -> float:
    """Where a top-1 axis running up to ``high`` starts: at the multiple of 5 below its lowest value when the
    values sit in the upper half of the axis (70-80 % students: their differences would vanish from 0), at
    0 otherwise."""
    return 5.0 * math.floor(low / 5.0) if low > 0.5 * high else 0.0


def bars_claim(axes: list) -> str:
    """What the bar chart's title says about its top-1 axes, read from their limits (never assumed)."""
    cut = [ax for ax in axes if ax.get_xlim()[0] > 0]
    if not cut:
        return "every top-1 axis starts at 0"
    if len(cut) == len(axes):
        return "the top-1 axis does not start at 0 (its label says where): compare bar ends, not lengths"
    return f"{len(cut)} of {len(axes)} top-1 axes do not start at 0 (their labels say where)"


def bars_figure(res: agg.Results, stats: pd.DataFrame, teacher: dict, pal: dict) -> Figure | str:
    """One panel per pair, a horizontal bar per method (its name on the shared y-axis): the figure grows in
    rows of panels, never into a strip as wide as the method list."""
    methods = agg.method_order(res.grid)
    pairs = [p for p in res.grid.pairs if stats.xs(p, level="pair")["n"].sum() > 0]
    if not pairs:
        return "no complete runs"
    done = res.complete.dropna(subset=["top1_last"])
    na = agg.not_applicable_cells(res)
    nrows, ncols = _wrap(len(pairs), 7)
    label_in = 0.2 + 0.065 * max(len(m) for m in methods)  # the method names, left of the first column
    row_h = max(1.7, 0.16 * len(methods) + 0.9)
    fig = _new_fig(label_in + 2.0 * ncols + 0.3, row_h * nrows + 1.0)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    for ax, p in zip(axes.flat, pairs):
        col = stats.xs(p, level="pair").reindex(methods)
        lo, hi = [], []
        for i, m in enumerate(methods):
            mean, std, n = col.at[m, "mean"], col.at[m, "std"], col.at[m, "n"]
            if n == 0:
                if (m, p) in na:  # an empty row that is not a missing run
                    ax.text(0.02, i, tables.NOT_APPLICABLE, transform=ax.get_yaxis_transform(), va="center", fontsize=8,
                            color="0.35", gid=f"n/a|{m}")
                continue
            ax.barh(i, mean, height=0.7, color=pal[m], edgecolor="black", linewidth=0.5, zorder=2, gid=m)
            if not math.isnan(std):
                ax.errorbar(mean, i, xerr=std, fmt="none", ecolor="black", capsize=2.5, lw=0.9, zorder=3)
                lo.append(mean - std)
                hi.append(mean + std)
            xs = done.loc[(done["method"] == m) & (done["pair"] == p), "top1_last"].to_numpy()
            ys = i + (np.linspace(-0.2, 0.2, len(xs)) if len(xs) > 1 else np.zeros(len(xs)))
            ax.scatter(xs, ys, s=8, color="white", edgecolor="black", linewidth=0.5, zorder=4)
            lo += [mean, *xs]
            hi += [mean, *xs]
        tv = teacher.get(p) or []
        if tv:
            tmean = float(np.mean(tv))
            ax.axvline(tmean, ls="--", color="0.35", lw=1, zorder=1)
            hi.append(tmean)
        span = max(hi) - min(lo)
        pad = max(0.08 * span, 0.5)
        start = _axis_start(min(lo) - pad, max(hi) + pad)
        ax.set_xlim(start, max(hi) + pad)
        ax.set_xlabel("top-1 (%)" if start == 0 else f"top-1 (%), axis from {start:g}")
        ax.set_title(_pair_title(p))
        ax.grid(axis="y", visible=False)
    axes[0, 0].set_yticks(range(len(methods)), methods)
    axes[0, 0].set_ylim(len(methods) - 0.5, -0.5)  # grid order from the top
    for ax in list(axes.flat)[len(pairs):]:
        ax.set_visible(False)
    shown = [ax for ax in axes.flat if ax.get_visible()]
    handles = [
        Line2D([], [], ls="--", color="0.35", label="teacher"),
        Line2D([], [], marker="o", ls="none", markerfacecolor="white", markeredgecolor="black",
               markersize=4, label="one seed"),
        Line2D([], [], color="black", marker="|", markersize=8, label="± std over seeds"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, frameon=False)
    _suptitle(fig, f"Student top-1 by method, last epoch\n(bars = mean over seeds; {bars_claim(shown)})")
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
    fig = _new_fig(max(4.5, 0.85 * gains.shape[1] + 2.6), max(2.4, 0.24 * gains.shape[0] + 1.8))
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
PAIR_LINESTYLES = ("-", "--", ":", "-.")


def pair_styles(pairs: list[str]) -> dict[str, dict]:
    """Pair -> its line's colour and style in the curves figure: tab10's ten colours (the closest two 42
    apart in CIELUV), then the same colours dashed, dotted...: no two pairs of a grid look alike."""
    colours = mpl.colormaps["tab10"].colors
    return {p: {"color": tuple(colours[i % len(colours)]), "ls": PAIR_LINESTYLES[(i // len(colours))
                                                                               % len(PAIR_LINESTYLES)]}
            for i, p in enumerate(pairs)}


def _legend_ncols(labels: list[str], width_in: float, fontsize: float = 8.0) -> int:
    """Columns of a legend below the panels: as many as the figure's width holds (a column is the widest
    label, at about 0.6 em a character, and its handle)."""
    column_in = 0.6 * fontsize / 72 * max(len(s) for s in labels) + 0.7
    return max(1, min(len(labels), int(width_in // column_in)))


def _integer_epochs(ax, first: int, last: int) -> None:
    pad = max(0.5, 0.02 * (last - first))
    ax.set_xlim(first - pad, last + pad)
    ax.xaxis.set_major_locator(mpl.ticker.MaxNLocator(integer=True, min_n_ticks=1, nbins=4))


def curves_figure(res: agg.Results) -> Figure | str:
    """Small multiples, one panel per method, one line per pair (mean over seeds). With a vanilla row, the
    first panel is vanilla's test top-1 and every other panel its method minus vanilla, epoch by epoch, on
    one shared scale (``heatmap_scale``'s rule over all the differences; a panel says when a line leaves
    it): 31 methods make 31 readable panels, 13 pairs 13 lines a panel in 13 distinct styles."""
    hist = res.history
    if hist.empty:
        return "no per-epoch history in the complete runs"
    if hist["epoch"].nunique() == 1 and int(hist["epoch"].iloc[0]) > 1:  # train.eval_every: one test pass, the last
        return (f"the runs were evaluated on the test set once, after epoch {int(hist['epoch'].iloc[0])} "
                f"(train.eval_every): no curve to draw; table 1 and the gain heatmap hold those numbers")
    methods = [m for m in agg.method_order(res.grid) if m in set(hist["method"])]
    pairs = [p for p in res.grid.pairs if p in set(hist["pair"])]
    first, last = int(hist["epoch"].min()), int(hist["epoch"].max())
    few = last - first + 1 <= 10  # short grids: markers on every epoch (one epoch: points, not a line)
    curve = hist.groupby(["method", "pair", "epoch"])["test_top1"].mean()
    ref = agg.VANILLA if agg.VANILLA in methods and len(methods) > 1 else None
    lines: dict[str, dict[str, pd.Series]] = {}
    for m in methods:
        lines[m] = {}
        for p in pairs:
            if (m, p) not in curve.index:
                continue
            c = curve.loc[(m, p)]
            if ref is not None and m != ref:
                if (ref, p) not in curve.index:
                    continue  # no vanilla curve on this pair: no difference to draw
                c = (c - curve.loc[(ref, p)]).dropna()
            lines[m][p] = c
    diffs = [c.to_numpy() for m in methods if m != ref for c in lines[m].values()]
    values = np.concatenate(diffs) if diffs else np.zeros(0)
    if ref is not None:
        lim = heatmap_scale(values)[0] * 1.1 if values.size else 1.0
        dlim = (-lim, lim)
    else:
        top = max(float(values.max()) if values.size else 0.0, 1.0)
        dlim = (0.0, top * 1.05)
    styles = pair_styles(pairs)
    nrows, ncols = _wrap(len(methods), 6)
    fig_w = 2.15 * ncols + 0.6
    handles = [Line2D([], [], lw=1.4, marker="o" if few else None, markersize=3, label=tables.pair_label(p),
                      **styles[p]) for p in pairs]
    with_mean = len(pairs) >= 3
    if with_mean:
        handles.append(Line2D([], [], color="black", lw=2.2, label="mean over pairs"))
    if ref is not None:
        handles.append(Line2D([], [], color="0.3", lw=0.9, ls=(0, (1, 1)), label="vanilla (difference 0)"))
    ncol = _legend_ncols([h.get_label() for h in handles], fig_w)
    fig = _new_fig(fig_w, 1.6 * nrows + 0.75 + 0.2 * math.ceil(len(handles) / ncol))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, m in zip(axes.flat, methods):
        for p, c in lines[m].items():
            ax.plot(c.index, c.to_numpy(), lw=1.2, label=tables.pair_label(p), gid=m, clip_on=True,
                    marker="o" if few else None, markersize=3 if len(c) > 1 else 5, **styles[p])
        if with_mean and lines[m]:
            mean = pd.concat(lines[m].values(), axis=1).mean(axis=1)
            ax.plot(mean.index, mean.to_numpy(), color="black", lw=2.2, gid=f"{m}|mean", zorder=3,
                    marker="o" if len(mean) == 1 else None, markersize=5)
        _integer_epochs(ax, first, last)
        ax.tick_params(labelbottom=True)
        if m == ref:
            ax.set_title(f"{m}: test top-1 (%)")
            continue
        ax.set_ylim(*dlim)
        if ref is None:
            ax.set_title(m)
            continue
        ax.axhline(0, color="0.3", lw=0.9, ls=(0, (1, 1)), zorder=1)
        ax.set_title(f"{m} − {ref} (pp)")
        own = np.concatenate([c.to_numpy() for c in lines[m].values()]) if lines[m] else np.zeros(0)
        off = [f"down to {own.min():+.1f}"] if own.size and own.min() < dlim[0] else []
        off += [f"up to {own.max():+.1f}"] if own.size and own.max() > dlim[1] else []
        if off:
            ax.text(0.03, 0.04, "off scale: " + ", ".join(off), transform=ax.transAxes, fontsize=8,
                    va="bottom", ha="left", gid=f"{m}|off", bbox=dict(boxstyle="square,pad=0.15", fc="white",
                                                                       ec="none", alpha=0.85))
    for ax in list(axes.flat)[len(methods):]:
        ax.set_visible(False)
    for j in range(ncols):  # the lowest panel of each column
        [ax for ax in axes[:, j] if ax.get_visible()][-1].set_xlabel("epoch")
    fig.legend(handles=handles, loc="outside lower center", ncols=ncol, frameon=False)
    what = (f"{ref} (first panel), then each method minus {ref}, same pair, same epoch"
            if ref is not None else "each method")
    _suptitle(fig, f"Test top-1 over training: {what}\n(lines = mean over seeds, one per pair)")
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
    """One panel per pair, one point per method in its colour and marker (``method_markers``); the legend
    below the panels names every method, in as many columns as the width holds."""
    pts = _fidelity_points(res, last, agreement)
    if not pts:
        return "no complete run records its agreement with the teacher"
    pairs = list(dict.fromkeys(p for _, p, _, _ in pts))
    methods = list(dict.fromkeys(m for m, _, _, _ in pts))
    marker = method_markers(methods, pal)
    nrows, ncols = _wrap(len(pairs), 4)
    fig_w = 3.1 * ncols + 0.5
    ncol = _legend_ncols(methods, fig_w)
    fig = _new_fig(fig_w, 2.7 * nrows + 0.8 + 0.2 * math.ceil(len(methods) / ncol))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, pair in zip(axes.flat, pairs):
        here = [q for q in pts if q[1] == pair]
        for m, p, x, y in here:
            ax.scatter([x], [y], s=40, marker=marker[m], color=pal[m], edgecolor="black", linewidth=0.5,
                       zorder=3, gid=f"{m}|{p}")
        xs, ys = np.array([q[2] for q in here]), np.array([q[3] for q in here])
        xr, yr = (xs.max() - xs.min()) or 1.0, (ys.max() - ys.min()) or 1.0
        ax.set_xlim(xs.min() - 0.1 * xr, xs.max() + 0.1 * xr)
        ax.set_ylim(ys.min() - 0.1 * yr, ys.max() + 0.1 * yr)
        ax.set_title(_pair_title(pair))
        ax.set_xlabel("agreement with the teacher (%)")
    for ax in axes[:, 0]:
        ax.set_ylabel("student top-1 (%)")
    for ax in list(axes.flat)[len(pairs):]:
        ax.set_visible(False)
    handles = [Line2D([], [], marker=marker[m], ls="none", markerfacecolor=pal[m], markeredgecolor="black",
                      label=m) for m in methods]
    fig.legend(handles=handles, loc="outside lower center", ncols=ncol, frameon=False)
    _suptitle(fig, "Accuracy vs agreement with the teacher, last epoch\n(one point per method; means over seeds)")
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
    fig = _new_fig(max(5.5, 0.3 * k + 4.0), 3.0)
    ax = fig.add_subplot()
    art = sp.critical_difference_diagram(fr.ranks, nemenyi(fr), ax=ax, color_palette={m: pal[m] for m in fr.methods},
                                         label_fmt_left="{label} ({rank:.2f})", label_fmt_right="({rank:.2f}) {label}",
                                         label_props={"fontsize": 8}, marker_props={"edgecolor": "black", "s": 30})
    for t in art["labels"]:  # black text: a light method colour (crd+kd's lilac) is unreadable on white
        t.set_color("black")
    ax.set_xticks(range(1, k + 1))
    ax.grid(False)
    lo, hi = ax.get_ylim()
    ax.set_ylim(lo - 0.4, hi)  # room for the lowest label's lower half
    # one row of 0.2 in a label or crossbar level (the diagram stacks them downwards from 0)
    fig.set_size_inches(fig.get_size_inches()[0], 1.3 + 0.2 * (hi - lo))
    title = (f"Average rank over {len(fr.pairs)} pairs (1 = best), last epoch; Friedman p = {fr.pvalue:.3g}\n"
             f"bars join methods the Nemenyi test does not tell apart (\u03b1 = {sig.ALPHA})")
    ax.set_title(_fit(fig, title, mpl.rcParams["axes.titlesize"]), pad=14)
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
                 agreement: pd.DataFrame | None = None, friedman: sig.Friedman | None = None,
                 catalogue: MethodCatalogue | None = None) -> list[FigureResult]:
    methods = agg.method_order(res.grid)
    pal = palette(methods, catalogue)
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
         "Per-epoch test top-1 of complete runs, one panel per method, one line per pair (mean over seeds; "
         "seed noise: section 9). With a vanilla row, the first panel is vanilla's top-1 and each other panel "
         "its method's top-1 minus vanilla's, same pair and epoch, on one scale clipped as the heatmap's (L "
         "over every difference); a panel whose line leaves it says how far. With 3 pairs or more, the black "
         "line is the mean over pairs.",
         lambda: curves_figure(res)),
        ("cost", "Accuracy gain vs training cost",
         "x: the method's mean time per epoch over its complete runs; y: its mean gain over vanilla "
         "across pairs (mean top-1 when there is no vanilla row).",
         lambda: cost_figure(res, means, cost, pal)),
    ]
    if agreement is not None:
        specs.append(("fidelity", "Accuracy vs agreement with the teacher",
                      "x: mean last-epoch top-1 agreement between student and teacher over seeds; y: mean "
                      "last-epoch student top-1; one panel per pair, one point per method (its colour; a "
                      "second marker where two methods' colours are close).",
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
