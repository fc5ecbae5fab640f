"""Issue 31: the report read as a new user would. Figures that stay readable at the default grid's 31
methods on 2 pairs and at the cifar100 preset's 13 pairs (size, font, nothing cut, every method named, no
two lines or points alike), titles that say only what the axes show, the summary the report opens with,
the Friedman test with a method that cannot run a pair, and imported teachers told apart.

The records are synthetic and every expected number is computed in the comments.
"""
from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
from matplotlib.colors import to_rgb
from matplotlib.text import Text
from seaborn.external import husl

from kdcore.config import load_preset
from kdcore.records import record_path, run_id, write_json
from methods import CATALOGUE
from reports import aggregate as agg
from reports import build_report, figures, tables
from reports import significance as sig

from test_reports import make_results

METHODS = load_preset("cifar100")["methods"]  # the 31 methods of the default and cifar100 grids
PAIRS_2 = load_preset("digits")["pairs"]  # resnet20:resnet8, wrn_16_2:wrn_16_1
PAIRS_13 = load_preset("cifar100")["pairs"]
COLLAPSING = ("pair", "mlkd+ls")
EPOCHS = 6
SEEDS = [0, 1]
MIN_FONT_PT = 8.0


def final_top1(m: str, i: int, seed: int) -> float:
    """Last-epoch top-1 of method m on pair number i: vanilla 70 + i; the others within ±2 of it; the two
    collapsing methods 3 + 0.1 i; plus 0.3 per seed for everyone (the same shift: it cancels in Δ)."""
    if m in COLLAPSING:
        base = 3.0 + 0.1 * i
    else:
        base = 70.0 + i + (0.0 if m == "vanilla" else ((METHODS.index(m) * 7) % 11 - 5) * 0.4)
    return base + 0.3 * seed


def write_grid(root: Path, methods: list[str], pairs: list[str], top1=final_top1, seeds=SEEDS,
               not_applicable: dict[str, str] | None = None, teacher_info=None) -> Path:
    """A grid of complete runs whose test top-1 climbs linearly to ``top1(method, pair index, seed)`` over
    EPOCHS epochs; ``not_applicable``: method -> the pair it cannot run (a "not applicable" record)."""
    root.mkdir(parents=True, exist_ok=True)
    write_json(root / "grid.json", {"name": root.name, "preset": "test", "dataset": "cifar100", "methods": methods,
                                    "pairs": pairs, "seeds": seeds, "config": {"train": {"epochs": EPOCHS}}})
    for m in methods:
        for i, p in enumerate(pairs):
            t, s = p.split(":")
            for seed in seeds:
                rec = {"schema": 1, "run_id": run_id(m, t, s, seed), "method": m, "teacher": t, "student": s,
                       "pair": p, "seed": seed, "dataset": "cifar100", "preset": "test",
                       "config": {"train": {"epochs": EPOCHS}}}
                if (not_applicable or {}).get(m) == p:
                    rec.update(status="not_applicable", error={"type": "PairNotSupported",
                                                               "message": f"{m} needs equal channel counts"})
                    write_json(record_path(root, rec["run_id"]), rec)
                    continue
                v = top1(m, i, seed)
                history = [{"epoch": e, "test_top1": v * e / EPOCHS} for e in range(1, EPOCHS + 1)]
                history[-1]["test_agreement"] = 50.0 + 0.5 * v
                info = teacher_info(p) if teacher_info else {"key": f"{t}-k", "top1": 80.0 + i}
                rec.update(status="complete", teacher_info=info,
                           metrics={"top1_last": v, "top1_best": v, "best_epoch": EPOCHS, "epochs": EPOCHS},
                           history=history, cost={"time_s": 60.0 + METHODS.index(m), "epoch_time_s": 10.0})
                write_json(record_path(root, rec["run_id"]), rec)
    return root


def all_figures(res: agg.Results) -> dict:
    last = agg.cell_stats(res, "top1_last")
    pal = figures.palette(agg.method_order(res.grid), CATALOGUE)
    with figures._style():
        return {
            "bars": figures.bars_figure(res, last, agg.teacher_top1(res), pal),
            "heatmap": figures.heatmap_figure(agg.mean_table(last)),
            "curves": figures.curves_figure(res),
            "cost": figures.cost_figure(res, agg.mean_table(last), agg.cost_table(res), pal),
            "fidelity": figures.fidelity_figure(res, last, agg.cell_stats(res, "agreement_last"), pal),
            "cd": figures.cd_figure(sig.friedman_test(res, last), pal),
        }


@pytest.fixture(scope="module", params=[2, 13], ids=["31x2", "31x13"])
def big(request, tmp_path_factory):
    """The default grid's 31 methods on 2 pairs (fsp cannot run the wrn pair) or the cifar100 preset's 13."""
    pairs = PAIRS_2 if request.param == 2 else PAIRS_13
    root = write_grid(tmp_path_factory.mktemp("big") / f"g{request.param}", METHODS, pairs,
                      not_applicable={"fsp": pairs[1]})
    res = agg.load_results(root)
    return res, all_figures(res)


def luv_distance(a, b) -> float:
    """Euclidean distance in CIELUV (computed here, not with the figure module's helper)."""
    la, lb = (husl.xyz_to_luv(husl.rgb_to_xyz(to_rgb(c))) for c in (a, b))
    return math.dist(la, lb)


def assert_distinct(styles: list[tuple], what: str) -> None:
    """styles: (name, colour, line style or marker); two entries of the same style must differ in colour by
    at least 30 in CIELUV (tab10's closest two: 42; the palette's vanilla and pair: 8)."""
    for (n1, c1, s1), (n2, c2, s2) in itertools.combinations(styles, 2):
        if s1 == s2:
            assert luv_distance(c1, c2) >= 30.0, f"{what}: {n1} and {n2} look alike ({c1}, {c2}, {s1!r})"


# ---------------------------------------------------------------------------- every figure
def assert_sane(made: dict) -> None:
    """Each figure at most MAX_FIGURE_PX a side, every visible text at least MIN_FONT_PT, nothing drawn past
    the figure's edges (a legend or a title cut off)."""
    for key, fig in made.items():
        w, h = fig.get_size_inches() * fig.dpi
        assert w <= figures.MAX_FIGURE_PX and h <= figures.MAX_FIGURE_PX, f"{key}: {w:.0f} x {h:.0f} px"
        fig.canvas.draw()
        r = fig.canvas.get_renderer()
        tight, box = fig.get_tightbbox(r), fig.bbox  # tight: inches; box: pixels
        assert tight.x0 * fig.dpi >= -1 and tight.y0 * fig.dpi >= -1, f"{key}: cut at the left or bottom"
        assert tight.x1 * fig.dpi <= box.x1 + 1 and tight.y1 * fig.dpi <= box.y1 + 1, f"{key}: cut at the right or top"
        small = [(t.get_text(), t.get_fontsize()) for t in fig.findobj(Text)
                 if t.get_visible() and t.get_text().strip() and (t.axes is None or t.axes.get_visible())
                 and t.get_fontsize() < MIN_FONT_PT]
        assert small == [], f"{key}: text below {MIN_FONT_PT} pt"


def test_every_figure_is_sane_in_size_legible_and_uncut(big):
    res, figs = big
    made = {k: f for k, f in figs.items() if not isinstance(f, str)}
    # the 2-pair grid has no Friedman test (2 blocks), so no diagram; the 13-pair grid has all six
    assert set(made) == ({"bars", "heatmap", "curves", "cost", "fidelity", "cd"} if len(res.grid.pairs) == 13
                         else {"bars", "heatmap", "curves", "cost", "fidelity"})
    assert_sane(made)


def test_small_grids_fit_their_titles_and_legends(tmp_path):
    # test_reports' unit grid (3 methods, 2 pairs) and 3 methods on 3 pairs (every figure, the diagram too):
    # narrow figures whose titles are wider than the panels
    unit = agg.load_results(make_results(tmp_path / "unit"))
    three = agg.load_results(write_grid(tmp_path / "three", ["vanilla", "kd", "crd"], PAIRS_13[:3]))
    for res, expect in ((unit, {"bars", "heatmap", "curves", "cost"}),
                        (three, {"bars", "heatmap", "curves", "cost", "fidelity", "cd"})):
        made = {k: f for k, f in all_figures(res).items() if not isinstance(f, str)}
        assert set(made) == expect
        assert_sane(made)


def test_bars_name_every_method_in_grid_order_and_mark_not_applicable(big):
    res, figs = big
    fig = figs["bars"]
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == len(res.grid.pairs)
    for ax in panels:  # the y-axis is shared: every panel's rows are the methods, top to bottom
        assert list(ax.get_yticks()) == list(range(len(METHODS))) and ax.get_ylim() == (len(METHODS) - 0.5, -0.5)
        if ax.get_subplotspec().is_first_col():  # the names, left of each row of panels
            assert [t.get_text() for t in ax.get_yticklabels()] == METHODS
    bars = {(ax.get_title(), p.get_gid()) for ax in panels for p in ax.patches if p.get_gid()}
    assert len(bars) == len(METHODS) * len(res.grid.pairs) - 1  # fsp has no bar on the pair it cannot run
    na = [t for t in panels[1].texts if t.get_gid() == "n/a|fsp"]
    assert len(na) == 1 and na[0].get_text() == "n/a" and na[0].get_position()[1] == METHODS.index("fsp")


def _bars_claim_and_labels(root: Path):
    res = agg.load_results(root)
    with figures._style():
        fig = figures.bars_figure(res, agg.cell_stats(res, "top1_last"), agg.teacher_top1(res),
                                  figures.palette(agg.method_order(res.grid), CATALOGUE))
    panels = [ax for ax in fig.axes if ax.get_visible()]
    return " ".join(fig._suptitle.get_text().split()), [ax.get_xlabel() for ax in panels], \
        [ax.get_xlim()[0] for ax in panels]


def test_bars_title_says_where_the_axis_starts_as_the_axes_show(big, tmp_path):
    res, figs = big
    # the big grid collapses (pair at 3 %): every panel's axis starts at 0, and the title says so
    fig = figs["bars"]
    assert all(ax.get_xlim()[0] == 0 for ax in fig.axes if ax.get_visible())
    assert " ".join(fig._suptitle.get_text().split()) == ("Student top-1 by method, last epoch (bars = mean over "
                                                          "seeds; every top-1 axis starts at 0)")
    if len(res.grid.pairs) != 2:
        return
    # test_reports' unit grid, no collapse. Pair A: lowest value vanilla's 70.5 - 0.5 = 70.0, highest the
    # teacher's 79.42: pad = max(0.08 x 9.42, 0.5) = 0.7536, 70.0 - 0.7536 = 69.25, above half of the axis'
    # top (79.42 + 0.75) -> the multiple of 5 below, 65. Pair B: lowest 65.0 - 1.0 = 64.0, highest 74.64:
    # pad 0.8512, 63.15 -> 60
    title, labels, starts = _bars_claim_and_labels(make_results(tmp_path / "unit"))
    assert starts == [65.0, 60.0]
    assert labels == ["top-1 (%), axis from 65", "top-1 (%), axis from 60"]
    assert title.endswith("(bars = mean over seeds; the top-1 axis does not start at 0 (its label says where): "
                          "compare bar ends, not lengths)")
    # one pair collapses, the other does not: 1 of 2 axes starts above 0
    mixed = write_grid(tmp_path / "mixed", ["vanilla", "kd", "pair"], PAIRS_2,
                       top1=lambda m, i, s: 5.0 if (m, i) == ("pair", 0) else 70.0 + s + (m == "kd"))
    title, labels, starts = _bars_claim_and_labels(mixed)
    assert starts[0] == 0.0 and starts[1] > 0 and labels[0] == "top-1 (%)"
    assert labels[1] == f"top-1 (%), axis from {starts[1]:g}"
    assert title.endswith("(bars = mean over seeds; 1 of 2 top-1 axes do not start at 0 (their labels say where))")
    # students at 15-17 % under an 80 % teacher: the values sit low on the axis, which starts at 0 (not at 10)
    low = write_grid(tmp_path / "low", ["vanilla", "kd"], PAIRS_2[:1], top1=lambda m, i, s: 15.0 + s + (m == "kd"))
    title, labels, starts = _bars_claim_and_labels(low)
    assert (starts, labels) == ([0.0], ["top-1 (%)"]) and title.endswith("every top-1 axis starts at 0)")


def test_curves_are_small_multiples_with_distinct_pair_lines(big):
    res, figs = big
    fig, pairs = figs["curves"], res.grid.pairs
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == (["vanilla: test top-1 (%)"]
                                                 + [f"{m} − vanilla (pp)" for m in METHODS[1:]])
    labels = [tables.pair_label(p) for p in pairs]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == labels + (["mean over pairs"] if len(pairs) >= 3 else []) + ["vanilla (difference 0)"]
    for ax in panels:
        m = ax.get_title().split()[0].rstrip(":")
        drawn = [ln for ln in ax.lines if ln.get_gid() == m]
        assert [ln.get_label() for ln in drawn] == [lab for lab, p in zip(labels, pairs)
                                                    if not (m == "fsp" and p == pairs[1])]
        assert_distinct([(ln.get_label(), ln.get_color(), ln.get_linestyle()) for ln in ax.lines], m)
    # every Δ panel shares one scale; the collapsing methods leave it and say how far: the lowest Δ is the
    # last epoch of the last pair, (3 + 0.1 i) - (70 + i) = -67 - 0.9 i: -67.9 (2 pairs), -77.8 (13 pairs)
    scales = {ax.get_ylim() for ax in panels[1:]}
    assert len(scales) == 1
    low = -67.0 - 0.9 * (len(pairs) - 1)
    for ax in panels[1:]:
        notes = [t.get_text() for t in ax.texts]
        m = ax.get_title().split()[0]
        assert notes == ([f"off scale: down to {low:+.1f}"] if m in COLLAPSING else []), m


def test_fidelity_legend_names_every_method_and_no_two_points_look_alike(big):
    res, figs = big
    fig = figs["fidelity"]
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == METHODS
    fig.canvas.draw()
    inside = legend.get_window_extent(fig.canvas.get_renderer())
    assert inside.x0 >= 0 and inside.y0 >= 0 and inside.x1 <= fig.bbox.x1 and inside.y1 <= fig.bbox.y1
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title().split("\n")[0] for ax in panels] == [tables.pair_label(p) for p in res.grid.pairs]
    for ax in panels:
        points = [(c.get_gid().split("|")[0], c.get_facecolor()[0], figures.method_markers(METHODS, figures.palette(METHODS, CATALOGUE))[
            c.get_gid().split("|")[0]]) for c in ax.collections if c.get_gid()]
        assert len(points) == len(METHODS) - (ax is panels[1])  # fsp: no point where it cannot run
        assert_distinct(points, ax.get_title())


def test_method_markers_separate_close_colours():
    marks = figures.method_markers(METHODS, figures.palette(METHODS, CATALOGUE))
    # vanilla, pair and mlkd+ls have nearly one colour (CIELUV 8 and 10 apart): three different markers
    assert len({marks["vanilla"], marks["pair"], marks["mlkd+ls"]}) == 3
    assert marks["vanilla"] == "o" and marks["kd"] == "o"  # the first of each colour keeps the circle
    assert_distinct([(m, figures.method_color(m, CATALOGUE), marks[m]) for m in METHODS], "markers")


# ---------------------------------------------------------------------------- the summary
def test_summary_opens_the_report_with_hand_computed_lines(tmp_path):
    root = make_results(tmp_path / "unit")
    text = build_report(root, catalogue=CATALOGUE).read_text(encoding="utf-8")
    head, rest = text.split("\n\n**Grid**\n\n", 1)
    assert rest.startswith("- **Dataset**") and "## 1." not in head
    # Pair A (resnet32x4 → resnet8x4): crd 75.00 best, kd 73.50 next: 1.50 ahead. kd's interval 73.5 ± 1.2421
    # (t(.975, 2) = 4.3027, 4.3027 x 0.5 / sqrt 3) overlaps crd's 75 ± 2.4841: †; vanilla's 70.5 ± 1.2421 does
    # not (4.5 > 3.73). crd - vanilla per seed: 4, 4.5, 5 -> mean 4.50, sd 0.5, half 1.2421: [+3.26, +5.74].
    # Pair B (vgg13 → MobileNetV2): kd 69.50 (seeds 0, 1) best, crd 68.50 next: 1.00 ahead; with 2 seeds the
    # half-width is t(.975, 1) = 12.706 x 0.7071 / sqrt 2 = 6.353: crd and vanilla both †. kd - vanilla per
    # seed: 5, 5 -> +5.00 [+5.00, +5.00] (2).
    # Against vanilla: kd A 3, 3, 3 and B 5, 5; crd A as above and B 4, 4: every interval above 0.
    assert head == (
        "# KD benchmark report: unit\n\n**Summary** (last-epoch top-1)\n\n"
        "- **Best per pair** (mean top-1, table 1; its lead over the next method; the paired difference vs vanilla "
        "with its 95% interval, section 9): resnet32x4 → resnet8x4: crd 75.00, 1.50 ahead of kd, 1 other within "
        "noise of it (†); vs vanilla +4.50 [+3.26, +5.74] (3); vgg13 → MobileNetV2: kd 69.50, 1.00 ahead of crd, "
        "2 others within noise of it (†); vs vanilla +5.00 [+5.00, +5.00] (2).\n"
        "- **Against vanilla beyond seed noise** (the paired 95% interval clear of 0, section 9's bold cells): "
        "**above** on 2 of 2 pairs: kd, crd; **below** none.\n"
        "- **Collapsed** (mean top-1 below 0.5 × vanilla's on the same pair): none.\n"
        "- **Across pairs** (Friedman test, section 9): not tested: 2 pairs where every method has a complete "
        "run, the Friedman test needs at least 3 (one block per pair).")
    # the same numbers as the tables they summarise
    assert "| crd      |     **75.00 ± 1.00 (3)** |" in text
    assert "**+4.50 [+3.26, +5.74] (3)**" in text[text.index("## 9."):]


def _summary(root: Path) -> list[str]:
    res = agg.load_results(root)
    last = agg.cell_stats(res, "top1_last")
    text = tables.summary_section(res, last, sig.paired_differences(res, agg.VANILLA), sig.friedman_test(res, last))
    return text.split("\n\n", 1)[1].splitlines()


def test_summary_collapses_below_and_across_pairs(tmp_path):
    P = PAIRS_13[:3]
    # vanilla 70, 60, 50 (+0.5 a seed); kd 1 above it everywhere; pair 5 on the first pair (below half of
    # 70.5), exactly half of vanilla's mean on the second (30.25 = 0.5 x 60.5: not below), 10 on the third
    # (10.5 < 25.25); crd 0.5 below vanilla, the same each seed (an interval [-0.5, -0.5])
    van = [70.0, 60.0, 50.0]
    extra = {"vanilla": lambda i: 0.0, "kd": lambda i: 1.0, "crd": lambda i: -0.5,
             "pair": lambda i: [5.0, 30.25, 10.5][i] - van[i] - 0.5}
    root = write_grid(tmp_path / "c", ["vanilla", "kd", "crd", "pair"], P, seeds=[0, 1, 2],
                      top1=lambda m, i, s: (van[i] + 0.5 * s + extra[m](i)) if m != "pair" else
                      van[i] + 0.5 + extra[m](i))
    best, against, collapsed, across = _summary(root)
    assert against == ("- **Against vanilla beyond seed noise** (the paired 95% interval clear of 0, section 9's "
                       "bold cells): **above** on 3 of 3 pairs: kd; **below** on 3 of 3 pairs: crd, pair.")
    assert collapsed == ("- **Collapsed** (mean top-1 below 0.5 × vanilla's on the same pair): pair (2 of 3 pairs; "
                         "lowest 5.00 against vanilla's 70.50 on wrn_40_2 → wrn_16_2).")
    # ranks kd 1, vanilla 2, crd 3, pair 4 on every pair: chi2 = N(k - 1) = 3 x 3 = 9 on 3 df, p = 0.0293
    assert across == ("- **Across pairs** (Friedman test, section 9): p = 0.0293 over 4 methods and 3 pairs, the "
                      "methods differ (p < 0.05): section 9 says which.")
    # kd's and vanilla's intervals are ± 4.3027 x 0.5 / sqrt 3 = 1.2421, crd's too: vanilla (1.00 below) and crd
    # (1.50 below) overlap kd's, pair (sd 0, far below) does not
    assert best.endswith("wrn_40_2 → wrn_16_2: kd 71.50, 1.00 ahead of vanilla, 2 others within noise of it (†); "
                         "vs vanilla +1.00 [+1.00, +1.00] (3); wrn_40_2 → wrn_40_1: kd 61.50, 1.00 ahead of "
                         "vanilla, 2 others within noise of it (†); vs vanilla +1.00 [+1.00, +1.00] (3); resnet56 → "
                         "resnet20: kd 51.50, 1.00 ahead of vanilla, 2 others within noise of it (†); vs vanilla "
                         "+1.00 [+1.00, +1.00] (3).")
    # no vanilla row: nothing to compare with, and the best carries no paired difference
    root = write_grid(tmp_path / "nov", ["kd", "crd", "at"], P[:1], seeds=[0],
                      top1=lambda m, i, s: {"kd": 70.0, "crd": 71.0, "at": 69.0}[m])
    best, against, collapsed, across = _summary(root)
    assert best.endswith("section 9): wrn_40_2 → wrn_16_2: crd 71.00, 1.00 ahead of kd.")
    assert against.endswith("bold cells): no `vanilla` row in this grid: nothing to compare with.")
    assert collapsed.endswith("same pair): no `vanilla` row in this grid: nothing to compare with.")


# ---------------------------------------------------------------------------- Friedman and a method that is n/a
def test_friedman_leaves_out_a_not_applicable_method_not_its_pair(tmp_path):
    P = PAIRS_13[:3]
    # crd > kd > vanilla on every pair; fsp cannot run the second pair
    order = {"vanilla": 0.0, "kd": 1.0, "crd": 2.0, "fsp": 0.5}
    root = write_grid(tmp_path / "na", ["vanilla", "kd", "fsp", "crd"], P, seeds=[0, 1],
                      top1=lambda m, i, s: 70.0 + i + order[m] + 0.1 * s, not_applicable={"fsp": P[1]})
    res = agg.load_results(root)
    fr = sig.friedman_test(res, agg.cell_stats(res, "top1_last"))
    assert fr.methods == ["vanilla", "kd", "crd"] and fr.pairs == P and fr.pairs_left_out == []
    assert fr.methods_not_applicable == {"fsp": [P[1]]} and fr.methods_left_out == []
    # 3 pairs, ranks crd 1, kd 2, vanilla 3 in each: chi2 = N(k - 1) = 3 x 2 = 6 on 2 df, p = exp(-3) = 0.0498
    assert math.isclose(fr.statistic, 6.0) and math.isclose(fr.pvalue, math.exp(-3.0))
    text = build_report(root, catalogue=CATALOGUE).read_text(encoding="utf-8")
    part = text[text.index("**Across pairs: Friedman test"):]
    assert ("Friedman test over 3 methods, one block per pair: χ²(2) = 6.00, p = 0.0498. It rests on 3 pairs × 2 "
            "seeds per cell (18 complete runs; grid seeds 0, 1), last-epoch top-1. Left out: method fsp (not "
            "applicable on wrn_40_2 → wrn_40_1: the test leaves the method out and keeps the pair).") in part
    assert "fsp left out (not applicable on some pair)" in text.split("**Grid**")[0]
    # on 2 pairs the test still needs a third, and says 2 pairs, not the 1 where fsp also ran
    root = write_grid(tmp_path / "na2", ["vanilla", "kd", "fsp", "crd"], PAIRS_2, seeds=[0],
                      top1=lambda m, i, s: 70.0 + order[m], not_applicable={"fsp": PAIRS_2[1]})
    res = agg.load_results(root)
    fr = sig.friedman_test(res, agg.cell_stats(res, "top1_last"))
    assert fr.note == ("not tested: 2 pairs where every method has a complete run, the Friedman test needs at "
                       "least 3 (one block per pair)")
    assert tables.significance_section(res, fr, {}).startswith(
        "**Across pairs: Friedman test and critical-difference diagram**\n\n_Friedman test and critical-difference "
        f"diagram {fr.note}._ Left out: method fsp (not applicable on wrn_16_2 → wrn_16_1: the test leaves the "
        "method out and keeps the pair).")


# ---------------------------------------------------------------------------- imported teachers
def test_imported_repdistiller_teachers_are_told_apart(tmp_path):
    # RepDistiller's zoo names every teacher ckpt_epoch_240.pth in a folder per architecture; the record
    # (benchmarks.teachers: path, file, weights_sha, arch) keeps where it came from
    sha = {PAIRS_2[0]: "a1" * 32, PAIRS_2[1]: "b2" * 32}

    def info(pair):
        arch = pair.split(":")[0]
        return {"source": "imported", "path": f"/data/zoo/{arch}_vanilla/ckpt_epoch_240.pth",
                "file": "ckpt_epoch_240.pth", "weights_sha": sha[pair], "key": "imported-" + sha[pair][:12],
                "arch": arch, "top1": 80.0}
    root = write_grid(tmp_path / "imp", ["vanilla", "kd"], PAIRS_2, seeds=[0], teacher_info=info)
    text = build_report(root, catalogue=CATALOGUE).read_text(encoding="utf-8")
    rows = {r[0]: r[1:] for r in (
        [c.strip() for c in line.strip("|").split("|")] for line in text.split("**Teachers**")[1].split("\n\n")[1]
        .splitlines()[2:])}
    assert rows["resnet20 → resnet8"][:2] == [
        "resnet20", "imported: `resnet20_vanilla/ckpt_epoch_240.pth` as resnet20, weights sha256 `a1a1a1a1a1a1`"]
    assert rows["wrn_16_2 → wrn_16_1"][:2] == [
        "wrn_16_2", "imported: `wrn_16_2_vanilla/ckpt_epoch_240.pth` as wrn_16_2, weights sha256 `b2b2b2b2b2b2`"]
    # a Windows path, and a record with the bare file only
    assert tables.imported_file({"path": "C:\\zoo\\vgg13_vanilla\\ckpt_epoch_240.pth"}) == \
        "vgg13_vanilla/ckpt_epoch_240.pth"
    assert tables.imported_file({"file": "ckpt_epoch_240.pth"}) == "ckpt_epoch_240.pth"
    assert tables.imported_file({}) is None
