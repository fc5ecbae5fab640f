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

from benchmarks.config import load_preset
from benchmarks.records import record_path, run_id, write_json
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
    pal = figures.palette(agg.method_order(res.grid))
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


# ---------------------------------------------------------------------------- the summary
def test_summary_opens_the_report_with_hand_computed_lines(tmp_path):
    root = make_results(tmp_path / "unit")
    text = build_report(root).read_text(encoding="utf-8")
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
    text = build_report(root).read_text(encoding="utf-8")
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
    text = build_report(root).read_text(encoding="utf-8")
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
