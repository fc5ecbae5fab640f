"""Tests of the report's "Is the gain real?" section (reports/significance.py, its table and diagram).

Synthetic records where the answer is known: a method better on every pair and seed, identical methods,
constant and hand-computed paired differences, too few pairs, a byte-identical rebuild.
"""
from __future__ import annotations

import math
from pathlib import Path

from kdcore.records import record_path, run_id, write_json
from methods import CATALOGUE
from reports import build_report
from reports import aggregate as agg
from reports import significance as sig
from reports import tables

PAIRS = ["resnet56:resnet20", "resnet110:resnet32", "resnet32x4:resnet8x4", "vgg13:vgg8",
         "wrn_40_2:wrn_16_2", "vgg13:MobileNetV2"]
SEEDS = [0, 1, 2]
T975_2 = 4.302652729911275  # scipy.stats.t.ppf(0.975, 2)


def write_grid(root: Path, methods: list[str], pairs: list[str], seeds: list[int], top1) -> Path:
    """A grid whose complete runs have last-epoch top-1 ``top1(method, pair, seed)`` (None: no record)."""
    root.mkdir(parents=True, exist_ok=True)
    write_json(root / "grid.json", {"name": "stats", "preset": "test", "dataset": "cifar100", "methods": methods,
                                    "pairs": pairs, "seeds": seeds, "config": {"train": {"epochs": 2}}})
    for m in methods:
        for p in pairs:
            t, s = p.split(":")
            for seed in seeds:
                v = top1(m, p, seed)
                if v is None:
                    continue
                rec = {"schema": 1, "run_id": run_id(m, t, s, seed), "status": "complete", "method": m,
                       "teacher": t, "student": s, "pair": p, "seed": seed, "dataset": "cifar100",
                       "preset": "test", "config": {"train": {"epochs": 2}},
                       "teacher_info": {"key": f"{t}-k", "top1": 80.0},
                       "metrics": {"top1_last": v, "top1_best": v, "best_epoch": 2, "epochs": 2},
                       "history": [{"epoch": 1, "test_top1": v - 5}, {"epoch": 2, "test_top1": v}],
                       "cost": {"time_s": 2.0, "epoch_time_s": 1.0}}
                write_json(record_path(root, rec["run_id"]), rec)
    return root


def section9(text: str) -> str:
    return text[text.index("## 9."):]


def rows_of(block: str) -> dict[str, list[str]]:
    out = {}
    for line in block.splitlines():
        if line.startswith("|") and not line.startswith("|:") and not line.startswith("|-"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            out[cells[0]] = cells[1:]
    return out


def sub_block(text: str, title: str) -> str:
    start = text.index(f"**{title}**")
    nxt = text.find("\n\n**", start + 5)
    return text[start: nxt if nxt >= 0 else None]


# ---------------------------------------------------------------------------- across pairs
def better(m, p, seed):
    """crd > kd > vanilla on every pair and seed (crd by 2 points, kd by 1), plus a pair- and seed-shift."""
    base = 60.0 + PAIRS.index(p) + 0.3 * seed
    return base + {"vanilla": 0.0, "kd": 1.0, "crd": 2.0}[m]


def test_a_method_better_everywhere_ranks_first_and_friedman_rejects(tmp_path):
    root = write_grid(tmp_path / "g", ["vanilla", "kd", "crd"], PAIRS[:5], SEEDS, better)
    res = agg.load_results(root)
    fr = sig.friedman_test(res, agg.cell_stats(res, "top1_last"))
    assert fr.note == "" and fr.pairs == PAIRS[:5] and fr.methods == ["vanilla", "kd", "crd"]
    assert fr.ranks.to_dict() == {"vanilla": 3.0, "kd": 2.0, "crd": 1.0}
    # perfect concordance: chi2 = N(k - 1) = 5 * 2 = 10 on 2 df, p = exp(-10 / 2) = 0.006738
    assert math.isclose(fr.statistic, 10.0)
    assert math.isclose(fr.pvalue, math.exp(-5.0)) and fr.pvalue < 0.05
    # CD = q(0.05, 3, inf)/sqrt(2) * sqrt(3 * 4 / (6 * 5)) = 2.3437 * 0.63246 = 1.4823 (Demsar's q_0.05 = 2.343)
    assert math.isclose(fr.cd, 2.343700586 * math.sqrt(12 / 30), rel_tol=1e-6)
    assert fr.n_runs == 45 and fr.seeds == (3, 3)


def test_identical_methods_give_p_one_and_no_difference(tmp_path):
    same = write_grid(tmp_path / "same", ["vanilla", "kd", "crd"], PAIRS[:4], SEEDS,
                      lambda m, p, s: 60.0 + PAIRS.index(p) + 0.3 * s)
    res = agg.load_results(same)
    fr = sig.friedman_test(res, agg.cell_stats(res, "top1_last"))
    assert fr.all_tied and fr.statistic == 0.0 and fr.pvalue == 1.0
    assert fr.ranks.to_dict() == {"vanilla": 2.0, "kd": 2.0, "crd": 2.0}
    # equal performance without exact ties: each method first, second and third once over 3 pairs
    order = {PAIRS[0]: ["vanilla", "kd", "crd"], PAIRS[1]: ["kd", "crd", "vanilla"], PAIRS[2]: ["crd", "vanilla", "kd"]}
    rot = write_grid(tmp_path / "rot", ["vanilla", "kd", "crd"], PAIRS[:3], SEEDS,
                     lambda m, p, s: 70.0 - order[p].index(m) + 0.1 * s)
    res = agg.load_results(rot)
    fr = sig.friedman_test(res, agg.cell_stats(res, "top1_last"))
    assert not fr.all_tied and math.isclose(fr.statistic, 0.0, abs_tol=1e-12)
    assert math.isclose(fr.pvalue, 1.0)
    from reports import figures  # the Nemenyi post-hoc lives with the diagram
    assert figures.nemenyi_differences(fr) == []
    assert (figures.nemenyi(fr).to_numpy() == 1.0).all()


# ---------------------------------------------------------------------------- within a pair
def test_paired_interval_constant_difference_is_exact(tmp_path):
    # kd = vanilla + 1.0 exactly (binary-exact values) on every seed: mean 1, sd 0 -> [+1, +1]
    root = write_grid(tmp_path / "c", ["vanilla", "kd"], PAIRS[:1], SEEDS,
                      lambda m, p, s: 70.0 + 0.5 * s + (1.0 if m == "kd" else 0.0))
    res = agg.load_results(root)
    d = sig.paired_differences(res, "vanilla").loc[("kd", PAIRS[0])]
    assert (d["n"], d["mean"], d["std"], d["lo"], d["hi"]) == (3, 1.0, 0.0, 1.0, 1.0)
    assert tables.fmt_paired(d["mean"], d["lo"], d["hi"], int(d["n"])) == "+1.00 [+1.00, +1.00] (3)"
    assert sig.paired_differences(res, "crd") is None  # no such row in the grid


def test_paired_interval_matches_a_hand_computation(tmp_path):
    # differences kd - vanilla per seed: 0.5, 1.0, 2.0 (the vanilla runs differ by seed: pairing matters)
    # mean = 3.5 / 3 = 1.1666667; deviations -0.6666667, -0.1666667, 0.8333333;
    # sd = sqrt((0.4444444 + 0.0277778 + 0.6944444) / 2) = sqrt(0.5833333) = 0.7637626
    # half-width = t(0.975, 2) * sd / sqrt(3) = 4.3026527 * 0.7637626 / 1.7320508 = 3.2862053 / 1.7320508
    #            = 1.8972915
    # interval = [1.1666667 - 1.8972915, 1.1666667 + 1.8972915] = [-0.7306248, 3.0639582]
    diff = {0: 0.5, 1: 1.0, 2: 2.0}
    van = {0: 70.0, 1: 72.0, 2: 69.0}
    root = write_grid(tmp_path / "h", ["vanilla", "kd"], PAIRS[:1], SEEDS,
                      lambda m, p, s: van[s] + (diff[s] if m == "kd" else 0.0))
    res = agg.load_results(root)
    d = sig.paired_differences(res, "vanilla").loc[("kd", PAIRS[0])]
    mean = 3.5 / 3
    sd = math.sqrt(((0.5 - mean) ** 2 + (1.0 - mean) ** 2 + (2.0 - mean) ** 2) / 2)
    half = T975_2 * sd / math.sqrt(3)
    assert math.isclose(sd, 0.7637626158, rel_tol=1e-9) and math.isclose(half, 1.8972915, rel_tol=1e-7)
    assert math.isclose(d["mean"], mean, rel_tol=1e-12) and math.isclose(d["std"], sd, rel_tol=1e-9)
    assert math.isclose(d["lo"], mean - half, rel_tol=1e-9) and math.isclose(d["hi"], mean + half, rel_tol=1e-9)
    assert math.isclose(d["lo"], -0.7306248, rel_tol=1e-6) and math.isclose(d["hi"], 3.0639582, rel_tol=1e-6)
    assert tables.fmt_paired(d["mean"], d["lo"], d["hi"], 3) == "+1.17 [-0.73, +3.06] (3)"


def test_one_common_seed_gives_the_difference_alone(tmp_path):
    # kd has seed 0 only: one paired seed -> no interval, and the footnote says so
    root = write_grid(tmp_path / "one", ["vanilla", "kd", "crd"], PAIRS[:2], SEEDS,
                      lambda m, p, s: None if (m == "kd" and s > 0) else 70.0 + {"vanilla": 0, "kd": 0.25, "crd": 1}[m])
    text = build_report(root, catalogue=CATALOGUE).read_text(encoding="utf-8")
    sec = section9(text)
    van = rows_of(sub_block(sec, "Within a pair: paired difference vs vanilla over seeds"))
    assert van["kd"] == ["+0.25 (1)", "+0.25 (1)"]
    assert van["crd"] == ["**+1.00 [+1.00, +1.00] (3)**"] * 2  # the interval excludes 0: bold
    vkd = rows_of(sub_block(sec, "Within a pair: paired difference vs kd over seeds"))
    assert vkd["vanilla"] == ["-0.25 (1)", "-0.25 (1)"] and vkd["crd"] == ["+0.75 (1)", "+0.75 (1)"]
    assert "a single common seed, the difference alone, no interval" in sec
    assert "last-epoch top-1" in sec and "grid seeds: 0, 1, 2" in sec


# ---------------------------------------------------------------------------- the report
def test_too_few_pairs_is_one_line_and_no_diagram(tmp_path):
    root = write_grid(tmp_path / "few", ["vanilla", "kd", "crd"], PAIRS[:2], SEEDS, better)
    stale = root / "figures" / "critical_difference.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")  # a diagram from an earlier, larger grid must not survive
    text = build_report(root, catalogue=CATALOGUE).read_text(encoding="utf-8")
    part = sub_block(section9(text), "Across pairs: Friedman test and critical-difference diagram")
    body = part.split("\n\n", 1)[1].strip()
    assert body == ("_Friedman test and critical-difference diagram not tested: 2 pairs where every method "
                    "has a complete run, the Friedman test needs at least 3 (one block per pair)._")
    assert not stale.exists() and "critical_difference.png" not in text
    assert "Critical-difference" not in text[text.index("## 8."):text.index("## 9.")]


def test_report_section_diagram_and_byte_identical_rebuild(tmp_path):
    methods = ["vanilla", "kd", "crd", "fitnet"]
    root = write_grid(tmp_path / "full", methods, PAIRS, SEEDS,
                      lambda m, p, s: better(m, p, s) if m != "fitnet" else better("vanilla", p, s) + 0.5
                      if not (p == PAIRS[5] and s == 2) else None)
    text = build_report(root, catalogue=CATALOGUE).read_text(encoding="utf-8")
    sec = section9(text)
    assert sec.startswith("## 9. Is the gain real? (last epoch)")
    # 4 methods on 6 pairs, ranks crd 1, kd 2, fitnet 3, vanilla 4 everywhere: chi2 = N(k - 1) = 18 on 3 df
    assert "Friedman test over 4 methods, one block per pair: χ²(3) = 18.00, p = 0.00044." in sec
    assert "6 pairs × 2–3 seeds per cell (71 complete runs; grid seeds 0, 1, 2)" in sec  # fitnet lacks one run
    assert "](figures/critical_difference.png)" in sec
    # CD = q(0.05, 4, inf)/sqrt(2) * sqrt(4 * 5 / 36) = 2.5690 * 0.7454 = 1.91: crd-vanilla (3) and
    # crd-fitnet, kd-vanilla (2) differ; crd-kd, kd-fitnet, fitnet-vanilla (1) do not
    assert "Nemenyi tells apart (better first): crd > fitnet, crd > vanilla, kd > vanilla." in sec
    assert "CD = 1.91 ranks" in sec
    van = rows_of(sub_block(sec, "Within a pair: paired difference vs vanilla over seeds"))
    assert van["crd"] == ["**+2.00 [+2.00, +2.00] (3)**"] * 6
    assert van["fitnet"] == ["**+0.50 [+0.50, +0.50] (3)**"] * 5 + ["**+0.50 [+0.50, +0.50] (2)**"]
    assert "## 9." not in text[:text.index("## 8.")]
    png = root / "figures" / "critical_difference.png"
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and b"matplotlib" not in data and len(data) > 5000
    files = [root / "report.md", *sorted((root / "figures").glob("*.png"))]
    before = {f: f.read_bytes() for f in files}
    build_report(root, catalogue=CATALOGUE)
    assert {f: f.read_bytes() for f in files} == before


def test_two_methods_say_so_and_other_grids_have_no_reference(tmp_path):
    root = write_grid(tmp_path / "two", ["vanilla", "kd"], PAIRS[:4], SEEDS[:1], better)
    res = agg.load_results(root)
    fr = sig.friedman_test(res, agg.cell_stats(res, "top1_last"))
    assert fr.note == "not tested: 2 methods with complete runs, the Friedman test needs at least 3"
    root = write_grid(tmp_path / "noref", ["crd", "fitnet", "at"], PAIRS[:3], SEEDS[:1],
                      lambda m, p, s: 70.0 + ["at", "fitnet", "crd"].index(m))
    res = agg.load_results(root)
    fr = sig.friedman_test(res, agg.cell_stats(res, "top1_last"))
    text = tables.significance_section(res, fr, {"vanilla": sig.paired_differences(res, "vanilla"),
                                                 "kd": sig.paired_differences(res, "kd")})
    assert "No `vanilla` or `kd` row in this grid: no paired differences." in text
    assert "χ²(2) = 6.00, p = 0.0498" in text  # N(k - 1) = 3 * 2 = 6; exp(-3) = 0.049787
    assert "3 pairs × 1 seed per cell (9 complete runs" in text
