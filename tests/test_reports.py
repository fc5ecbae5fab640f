"""Tests of the reporting layer (reports/): tables, marks, ranks, inventory, figures, determinism, CLI.

The records are written by hand below; every expected string is computed in the comments.
"""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from kdcore.records import record_path, run_id, write_json
from methods import CATALOGUE, method_defaults
from reports import build_report
from reports import aggregate as agg

ROOT = Path(__file__).resolve().parents[1]
A = "resnet32x4:resnet8x4"  # same architecture (resnet -> resnet)
B = "vgg13:MobileNetV2"  # cross architecture (vgg -> MobileNet)
METHODS = ["vanilla", "kd", "crd"]
SEEDS = [0, 1, 2]
TEACHER_TOP1 = {A: 79.42, B: 74.64}
FAILED = ("kd", B, 2)
MISSING = ("crd", B, 2)

# last-epoch top-1 per (method, pair), seeds 0, 1, 2 (None: failed / missing)
LAST = {
    ("vanilla", A): [70.0, 70.5, 71.0],  # mean 70.50, std sqrt((.25+0+.25)/2) = 0.50
    ("kd", A): [73.0, 73.5, 74.0],       # mean 73.50, std 0.50
    ("crd", A): [74.0, 75.0, 76.0],      # mean 75.00, std sqrt((1+0+1)/2) = 1.00
    ("vanilla", B): [64.0, 65.0, 66.0],  # mean 65.00, std 1.00
    ("kd", B): [69.0, 70.0, None],       # mean 69.50, std sqrt((.25+.25)/1) = 0.7071 -> 0.71, n=2
    ("crd", B): [68.0, 69.0, None],      # mean 68.50, std 0.71, n=2
}
# best-epoch top-1 = last + delta (a shift: same std)
BEST_DELTA = {"vanilla": 0.5, "kd": 0.5, "crd": 0.2}
EPOCH_TIME = {"vanilla": 10.0, "kd": 12.0, "crd": 15.0}
PEAK_MEM = {"vanilla": 1000.0, "kd": 1500.0, "crd": 2000.0}
EXTRA = {"vanilla": 0, "kd": 0, "crd": 270000}
EPOCHS = 5


def _record(method, pair, seed, last, dataset, status="complete", config=None, teacher_info=None):
    t, s = pair.split(":")
    best = None if last is None else round(last + BEST_DELTA[method], 6)
    hist_acc = [] if last is None else [30.0, 50.0, 65.0, best, last]
    history = [{"epoch": e + 1, "lr": 0.05, "loss": 2.0 / (e + 1), "losses": {"ce": 1.0},
                "weighted_losses": {"ce": 1.0}, "train_top1": a + 5, "test_top1": a, "test_top5": a + 15,
                "time_s": EPOCH_TIME[method], "images_per_s": 50000 / EPOCH_TIME[method]}
               for e, a in enumerate(hist_acc)]
    rec = {
        "schema": 1, "run_id": run_id(method, t, s, seed), "status": status,
        "method": method, "teacher": t, "student": s, "pair": pair, "seed": seed,
        "dataset": dataset, "preset": "test",
        "config": {"train": {"epochs": EPOCHS}} if config is None else config(method, pair),
        "env": {"python": "3"},
        "teacher_info": {"key": f"{t}-{dataset}", "top1": TEACHER_TOP1[pair], "top5": 95.0, "path": "x"}
        if teacher_info is None else teacher_info(method, pair, seed),
        "metrics": {"top1_last": last, "top5_last": None if last is None else last + 15, "top1_best": best,
                    "top5_best": None, "best_epoch": 4, "epochs": EPOCHS},
        "history": history,
        "cost": {"time_s": EPOCH_TIME[method] * EPOCHS, "epoch_time_s": EPOCH_TIME[method],
                 "images_per_s": 50000 / EPOCH_TIME[method], "peak_mem_mb": PEAK_MEM[method],
                 "extra_params": EXTRA[method], "student_params": 1_000_000},
        "error": None, "started_at": "2024-01-01T00:00:00", "finished_at": "2024-01-01T01:00:00",
    }
    return rec


def make_results(root: Path, dataset: str = "cifar100", config=None, grid_config=None, teacher_info=None) -> Path:
    """The unit grid. config(method, pair) -> a record's ``config`` (default: only train.epochs = 5);
    teacher_info(method, pair, seed) -> its ``teacher_info``; grid_config: grid.json's ``config``."""
    root.mkdir(parents=True, exist_ok=True)
    write_json(root / "grid.json", {
        "name": "unit", "preset": "test", "dataset": dataset, "methods": METHODS, "pairs": [A, B],
        "seeds": SEEDS,
        "config": grid_config if grid_config is not None else {"train": {"epochs": EPOCHS, "batch_size": 64, "lr": 0.05}},
    })
    for (method, pair), vals in LAST.items():
        for seed, v in zip(SEEDS, vals):
            if (method, pair, seed) == MISSING:
                continue
            rec = _record(method, pair, seed, v, dataset, config=config, teacher_info=teacher_info)
            if (method, pair, seed) == FAILED:
                rec = _record(method, pair, seed, None, dataset, status="failed", config=config,
                              teacher_info=teacher_info)
                rec["history"] = rec["history"][:0]
                rec["metrics"] = {}
                rec["error"] = {"type": "RuntimeError",
                                "message": "CUDA out of memory. Tried to allocate 2.00 GiB\n"
                                           "Traceback (most recent call last): ...",
                                "epoch": 3, "step": 120}
                rec["finished_at"] = None
            write_json(record_path(root, rec["run_id"]), rec)
    return root


def section(text: str, number: int) -> str:
    """The text of '## <number>.' up to the next '## '."""
    start = text.index(f"## {number}.")
    end = text.find("\n## ", start + 1)
    return text[start: end if end >= 0 else None]


def table_list(text: str) -> list[list[str]]:
    """The cells of every pipe-table row in ``text`` (header rows included, rule rows not)."""
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not line.startswith("|:") and not line.startswith("|-"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


def table_rows(text: str) -> dict[str, list[str]]:
    """First column -> the other cells (a later row with the same first cell wins)."""
    return {r[0]: r[1:] for r in table_list(text)}


def sub_table(sec: str, title: str) -> dict[str, list[str]]:
    start = sec.index(f"**{title}**")
    nxt = sec.find("\n\n**", start + 5)
    return table_rows(sec[start: nxt if nxt >= 0 else None])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = make_results(tmp_path_factory.mktemp("grid") / "unit")
    path = build_report(root, catalogue=CATALOGUE)
    return root, path.read_text(encoding="utf-8")


# ---------------------------------------------------------------------------- header
def test_header(built):
    _, text = built
    assert text.startswith("# KD benchmark report: unit\n")
    # 18 expected = 3 methods x 2 pairs x 3 seeds; 1 failed, 1 missing -> 16 complete
    assert "16 complete, 1 failed, 1 missing (of 18 expected" in text
    assert "**seeds**: 0, 1, 2" in text
    assert "epochs=5, batch_size=64, lr=0.05" in text


# ---------------------------------------------------------------------------- main tables
def test_last_epoch_table_cells_bold_and_dagger(built):
    _, text = built
    sec = section(text, 1)
    assert "last epoch" in sec.splitlines()[0]
    same = sub_table(sec, "Same-architecture pairs")
    cross = sub_table(sec, "Cross-architecture pairs")
    assert list(same)[:4] == ["method", "teacher", "vanilla", "kd"]
    assert same["method"] == ["resnet32x4 → resnet8x4"]
    assert cross["method"] == ["vgg13 → MobileNetV2"]
    assert same["teacher"] == ["79.42"] and cross["teacher"] == ["74.64"]
    # Pair A (n = 3, t(0.975, 2) = 4.302653, half-width = t * std / sqrt(3)):
    #   crd 75.00 +- 4.302653*1.0/1.732 = 75 +- 2.484 -> [72.516, 77.484]   best -> bold
    #   kd  73.50 +- 4.302653*0.5/1.732 = 73.5 +- 1.242 -> [72.258, 74.742] overlaps -> dagger
    #   vanilla 70.50 +- 1.242 -> [69.258, 71.742] < 72.516 -> clearly worse, no mark
    assert same["crd"] == ["**75.00 ± 1.00 (3)**"]
    assert same["kd"] == ["73.50 ± 0.50 (3)†"]
    assert same["vanilla"] == ["70.50 ± 0.50 (3)"]
    # Pair B: kd 69.50 best (n=2: t(0.975,1) = 12.706, half = 12.706*0.7071/1.414 = 6.353);
    #   crd 68.50 (n=2) -> overlaps -> dagger; vanilla 65.00 +- 2.484 = [62.516, 67.484] overlaps
    #   kd's [63.147, 75.853] -> dagger
    assert cross["kd"] == ["**69.50 ± 0.71 (2)**"]
    assert cross["crd"] == ["68.50 ± 0.71 (2)†"]
    assert cross["vanilla"] == ["65.00 ± 1.00 (3)†"]
    assert "95% t-interval" in sec and "overlaps the best" in sec


def test_best_epoch_table(built):
    _, text = built
    sec = section(text, 2)
    assert "best epoch" in sec.splitlines()[0]
    same = sub_table(sec, "Same-architecture pairs")
    cross = sub_table(sec, "Cross-architecture pairs")
    # best = last + 0.5 (vanilla, kd) or + 0.2 (crd): a shift, std unchanged
    assert same["crd"] == ["**75.20 ± 1.00 (3)**"]   # [72.716, 77.684]
    assert same["kd"] == ["74.00 ± 0.50 (3)†"]        # [72.758, 75.242] overlaps
    assert same["vanilla"] == ["71.00 ± 0.50 (3)"]    # [69.758, 72.242] < 72.716
    assert cross["kd"] == ["**70.00 ± 0.71 (2)**"]
    assert cross["crd"] == ["68.70 ± 0.71 (2)†"]


def test_single_seed_and_dagger_helper():
    from reports.tables import fmt_cell
    assert fmt_cell(71.234, float("nan"), 1) == "71.23 (n=1)"
    assert fmt_cell(float("nan"), float("nan"), 0) == "–"
    col = pd.DataFrame({"mean": [75.0, 74.9, 70.0, 74.0],
                        "half": [0.5, 0.5, 0.5, float("nan")]}, index=["a", "b", "c", "d"])
    # a best; b: |75-74.9| = 0.1 <= 0.5+0.5 -> dagger; c: 5 > 1 -> none; d: n=1, no interval -> none
    assert agg.best_and_indistinguishable(col) == ({"a"}, {"b"})
    assert math.isclose(agg.t_quantile(2), 4.302652729911275)  # scipy.stats.t.ppf(0.975, 2)
    assert math.isclose(agg.t_quantile(100), 1.983972, abs_tol=1e-4)


# ---------------------------------------------------------------------------- gains and ranks
def test_gain_table_and_average_ranks(built):
    _, text = built
    rows = table_rows(section(text, 3))
    assert rows["method"][-3:] == ["avg gain vs vanilla", "avg gain vs kd", "avg rank"]
    # crd: A 75.0-70.5 = +4.50, 75.0-73.5 = +1.50; B 68.5-65.0 = +3.50, 68.5-69.5 = -1.00
    #      avg vs vanilla (4.5+3.5)/2 = +4.00, vs kd (1.5-1)/2 = +0.25; ranks A 1, B 2 -> 1.50
    assert rows["crd"] == ["+4.50 / +1.50", "+3.50 / -1.00", "+4.00", "+0.25", "1.50"]
    # kd: A +3.00, B 69.5-65 = +4.50 -> avg +3.75; ranks A 2, B 1 -> 1.50
    assert rows["kd"] == ["+3.00 / –", "+4.50 / –", "+3.75", "–", "1.50"]
    # vanilla: vs kd A 70.5-73.5 = -3.00, B 65-69.5 = -4.50 -> -3.75; rank 3 in both -> 3.00
    assert rows["vanilla"] == ["– / -3.00", "– / -4.50", "–", "-3.75", "3.00"]


def test_average_ranks_ties():
    means = pd.DataFrame({"p1": [70.0, 70.0, 60.0], "p2": [50.0, 60.0, float("nan")]},
                         index=["x", "y", "z"])
    r = agg.average_ranks(means)
    # p1: x, y tie for 1st -> 1.5 each, z 3; p2: y 1, x 2, z absent
    assert r["avg_rank"].to_dict() == {"x": (1.5 + 2) / 2, "y": (1.5 + 1) / 2, "z": 3.0}
    assert r["n_pairs"].to_dict() == {"x": 2, "y": 2, "z": 1}


# ---------------------------------------------------------------------------- published
def published_config(method, pair, epochs=240, num_train=50000, overrides=None):
    """A record's config under RepDistiller's protocol, written out (not read from the code under test)."""
    student = pair.split(":")[1]
    hp = method_defaults(method)
    for part, kv in (overrides or {}).items():
        hp[part].update(kv)
    return {"train": {"epochs": epochs, "batch_size": 64, "lr": 0.01 if student == "MobileNetV2" else 0.05,
                      "momentum": 0.9, "weight_decay": 5e-4, "lr_decay_epochs": [150, 180, 210],
                      "lr_decay_rate": 0.1, "eval_batch_size": 256},
            "data": {"name": "cifar100", "num_train": num_train, "num_test": 10000, "num_classes": 100,
                     "input_shape": [3, 32, 32], "pad": 4, "flip": True},
            "method": hp}


PUBLISHED_GRID_CONFIG = {
    "train": {"epochs": 240, "batch_size": 64, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
              "lr_decay_epochs": [150, 180, 210], "lr_decay_rate": 0.1,
              "lr_by_student": {"MobileNetV2": 0.01, "ShuffleV1": 0.01, "ShuffleV2": 0.01}},
    "teacher_train": {}, "teacher_seed": 0,
}


def trained_teacher(method, pair, seed):
    t = pair.split(":")[0]
    return {"key": f"{t}-key", "top1": TEACHER_TOP1[pair], "top5": 95.0, "path": f"/c/{t}.pt",
            "source": "trained", "seed": 0, "epochs": 240,
            "recipe": {"epochs": 240, "batch_size": 64, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
                       "lr_decay_epochs": [150, 180, 210], "lr_decay_rate": 0.1, "eval_batch_size": 256}}


def published_text(root: Path, published=None) -> str:
    """Section 4 alone (no figures: fast)."""
    from reports import tables
    res = agg.load_results(root)
    return tables.published_section(res, agg.cell_stats(res, "top1_last"), agg.cell_stats(res, "top1_best"),
                                    agg.teacher_top1(res), published, CATALOGUE)


def diff_rows(text: str) -> list[list[str]]:
    """The rows of the protocol-difference table (the first table of the section), header excluded."""
    block = text[: text.index("| pair ")]
    return table_list(block)[1:]


def test_published_protocol_mismatch_in_full_report(built):
    # the unit records carry only train.epochs = 5: every run differs, so no delta anywhere
    _, text = built
    sec = section(text, 4)
    assert sec.splitlines()[2].startswith("**The protocol of this grid differs from the published one**")
    diffs = {r[0]: r[1:] for r in diff_rows(sec)}
    assert diffs["`train.epochs`"] == ["5", "240", "16 of 16 student runs"]
    # a section the records lack is one line; kd's runs: 3 on A + 2 on B (one failed, one missing)
    assert diffs["`data`"] == ["not recorded", "num_train=50000, num_test=10000, input_shape=[3, 32, 32], "
                               "pad=4, flip=true", "16 of 16 student runs"]
    assert diffs["`method.kd`"] == ["not recorded", "T=4, gamma=0.1, alpha=0.9", "5 of 16 student runs"]
    # the teacher recipe follows grid.json (train.epochs = 5, no teacher_train): both teachers differ
    assert diffs["`teacher.train.epochs`"] == ["5", "240", "2 of 2 teachers"]
    rows = {(c[0], c[1]): c for c in table_list(sec[sec.index("| pair "):])}
    kd = rows[("resnet32x4 → resnet8x4", "kd")]
    # ours 73.50 (3 seeds, last epoch), published 73.33 (CRD paper): side by side, no delta
    assert kd[2:8] == ["73.50 (3)", "74.00 (3)", "73.33", "last epoch [a]", "– (protocol differs)", "[1]"]
    for key, r in rows.items():
        if key != ("pair", "method"):
            assert r[6] == "– (protocol differs)", key
    assert "-71" not in sec and "+0.17" not in sec
    assert "[a] last-epoch top-1 (RepDistiller reports the last epoch, its issue #16)" in sec
    assert "CRD paper (Tian et al., ICLR 2020)" in sec


def test_published_protocol_match_prints_deltas(tmp_path):
    root = make_results(tmp_path / "g", config=published_config, grid_config=PUBLISHED_GRID_CONFIG,
                        teacher_info=trained_teacher)
    sec = published_text(root)
    assert sec.startswith("Every run here used the published protocol")
    assert "differs" not in sec
    rows = {(c[0], c[1]): c for c in table_list(sec)}
    kd = rows[("resnet32x4 → resnet8x4", "kd")]
    # kd 73.50 - 73.33 = +0.17; crd 75.00 - 75.51 = -0.51; vanilla 70.50 - 72.50 = -2.00;
    # teacher 79.42 - 79.42 = +0.00; cross pair kd 69.50 - 67.37 = +2.13, vanilla 65.00 - 64.60 = +0.40
    assert kd[2:8] == ["73.50 (3)", "74.00 (3)", "73.33", "last epoch [a]", "+0.17", "[1]"]
    assert rows[("resnet32x4 → resnet8x4", "crd")][6] == "-0.51"
    assert rows[("resnet32x4 → resnet8x4", "vanilla")][6] == "-2.00"
    assert rows[("resnet32x4 → resnet8x4", "teacher")][6] == "+0.00"
    assert rows[("vgg13 → MobileNetV2", "kd")][6] == "+2.13"
    assert rows[("vgg13 → MobileNetV2", "vanilla")][6] == "+0.40"
    # methods kdbench does not have are named once, never given a row
    assert not any(k[1] == "dkd" for k in rows)
    only = [line for line in sec.splitlines() if line.startswith("Published only")]
    assert len(only) == 1 and "dkd" in only[0] and "wttm" in only[0] and " kd," not in only[0]


def test_published_one_epoch_2000_images_shows_no_delta(tmp_path):
    def cfg(method, pair):
        return published_config(method, pair, epochs=1, num_train=2000)
    grid_cfg = {**PUBLISHED_GRID_CONFIG, "train": {**PUBLISHED_GRID_CONFIG["train"], "epochs": 1},
                "teacher_train": {"epochs": 240}}
    root = make_results(tmp_path / "g", config=cfg, grid_config=grid_cfg, teacher_info=trained_teacher)
    sec = published_text(root)
    assert sec.startswith("**The protocol of this grid differs from the published one**")
    assert diff_rows(sec) == [["`data.num_train`", "2000", "50000", "16 of 16 student runs"],
                              ["`train.epochs`", "1", "240", "16 of 16 student runs"]]
    rows = [r for r in table_list(sec[sec.index("| pair "):])[1:]]
    assert len(rows) == 8  # teacher, vanilla, kd, crd on both pairs
    assert all(r[6] == "– (protocol differs)" for r in rows)
    assert all(r[4] for r in rows)  # the published number is still printed


def test_published_one_cell_with_changed_hyperparameter(tmp_path):
    def cfg(method, pair):
        return published_config(method, pair, overrides={"kd": {"T": 2.0}} if (method, pair) == ("kd", A) else None)
    root = make_results(tmp_path / "g", config=cfg, grid_config=PUBLISHED_GRID_CONFIG, teacher_info=trained_teacher)
    sec = published_text(root)
    assert diff_rows(sec) == [["`method.kd.T`", "2", "4", "3 of 16 student runs"]]
    rows = {(c[0], c[1]): c for c in table_list(sec[sec.index("| pair "):])}
    assert rows[("resnet32x4 → resnet8x4", "kd")][6] == "– (protocol differs)"
    assert rows[("vgg13 → MobileNetV2", "kd")][6] == "+2.13"  # kd on B used T = 4
    assert rows[("resnet32x4 → resnet8x4", "crd")][6] == "-0.51"


def test_published_convention_beside_each_number(tmp_path):
    root = make_results(tmp_path / "g", config=published_config, grid_config=PUBLISHED_GRID_CONFIG,
                        teacher_info=trained_teacher)
    table = pd.DataFrame([
        ["resnet32x4", "resnet8x4", "kd", 73.0, "best-epoch top-1, mean of 5 runs (somewhere)", "S1"],
        ["resnet32x4", "resnet8x4", "crd", 74.0, "not stated in README (no run count)", "S2"],
    ], columns=["teacher", "student", "method", "top1", "protocol", "source"])
    sec = published_text(root, table)
    rows = {(c[0], c[1]): c for c in table_list(sec)}
    # kd: best-epoch convention -> against our best-epoch mean 74.00: +1.00
    assert rows[("resnet32x4 → resnet8x4", "kd")][5:8] == ["best epoch, mean of 5 runs [a]", "+1.00 (vs best)", "[1]"]
    # crd: epoch not stated -> against our last-epoch mean 75.00, and says so
    assert rows[("resnet32x4 → resnet8x4", "crd")][5:8] == ["epoch not stated [b]", "+1.00 (vs last; epoch not stated)",
                                                           "[2]"]
    assert "[a] best-epoch top-1, mean of 5 runs (somewhere)" in sec
    assert "[b] not stated in README (no run count)" in sec


def test_convention_labels_of_the_reference_table():
    from reports.published import convention, load_published
    conv = {convention(p) for p in load_published()["protocol"]}
    assert {"last epoch", "best epoch, mean of 5 runs", "epoch not stated",
            "epoch not stated, mean of ? runs, std 0.24",
            "epoch not stated (likely best), mean of ? runs"} <= conv
    assert convention("last-epoch top-1 (RepDistiller ...)") == "last epoch"


# ---------------------------------------------------------------------------- cost and inventory
def test_cost_table(built):
    _, text = built
    rows = table_rows(section(text, 5))
    # crd: 5 complete runs, 15 s/epoch, 50000/15 = 3,333 img/s, 270000 -> "270.0 k",
    # 75 s per run, 5 x 75 = 375 s = 6.2 min in all; these records predate the memory fields (they hold only
    # the process's peak_mem_mb): params, optimizer state and buffers are "–", no CUDA or cohort table
    assert rows["crd"] == ["5", "15.00", "3,333", "–", "–", "–", "–", "270.0 k", "75.0 s", "6.2 min"]
    assert "peak CUDA" not in section(text, 5) and "per cohort" not in section(text, 5)
    assert rows["kd"][0] == "5" and rows["vanilla"][0] == "6"


def test_inventory(built):
    _, text = built
    inv = section(text, 6)
    assert "16 complete, 0 running, 1 failed, 0 corrupt, 1 missing (of 18 expected)" in inv
    assert ("| `kd__vgg13-MobileNetV2__s2` | RuntimeError: CUDA out of memory. Tried to allocate "
            "2.00 GiB |       3 |    120 |") in inv
    assert "Traceback" not in text  # only the error's first line
    assert "- `crd__vgg13-MobileNetV2__s2`" in inv
    assert "`crd__resnet32x4-resnet8x4__s0`" in inv  # complete runs listed too


# ---------------------------------------------------------------------------- figures and determinism
def test_figures_exist_and_are_linked(built):
    root, text = built
    figs = sorted((root / "figures").glob("*.png"))
    assert [f.name for f in figs] == sorted(["top1_bars.png", "gain_heatmap.png", "test_curves.png",
                                             "gain_vs_cost.png"])
    for f in figs:
        data = f.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert len(data) > 5000, f.name
        assert b"matplotlib" not in data  # no Software metadata
        assert f"](figures/{f.name})" in text


def test_rebuild_is_byte_identical(built):
    root, _ = built
    files = [root / "report.md", *sorted((root / "figures").glob("*.png"))]
    before = {f: f.read_bytes() for f in files}
    build_report(root, catalogue=CATALOGUE)
    assert {f: f.read_bytes() for f in files} == before


# ---------------------------------------------------------------------------- degenerate grids, CLI
def test_no_complete_runs_skips_figures_and_not_cifar(tmp_path):
    root = tmp_path / "digits"
    write_json(root / "grid.json", {"name": "d", "preset": "digits", "dataset": "digits",
                                    "methods": ["vanilla", "kd"], "pairs": ["resnet56:resnet20"],
                                    "seeds": [0], "config": {}})
    rec = _record("kd", A, 0, None, "digits", status="running")
    rec.update(run_id=run_id("kd", "resnet56", "resnet20", 0), teacher="resnet56", student="resnet20",
               pair="resnet56:resnet20", metrics={}, history=[{"epoch": 1, "test_top1": 20.0}])
    write_json(record_path(root, rec["run_id"]), rec)
    bad = record_path(root, run_id("vanilla", "resnet56", "resnet20", 0))
    bad.write_text("{ not json")
    out = subprocess.run([sys.executable, "-m", "reports", str(root)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    text = (root / "report.md").read_text(encoding="utf-8")
    assert "0 complete, 0 failed, 0 missing, 1 running, 1 corrupt" in text
    assert "No published numbers apply" in text and "`digits`" in text
    assert "_skipped: no complete runs._" in text
    assert "| `vanilla__resnet56-resnet20__s0` |" in section(text, 6)
    assert not (root / "figures" / "top1_bars.png").exists()


def test_cli_empty_dir_exits_2(tmp_path):
    out = subprocess.run([sys.executable, "-m", "reports", str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "no grid.json" in lines[0]
    assert out.stdout == ""


# ---------------------------------------------------------------------------- issue 19: teachers, stale records
def test_teacher_description_trained_cached_imported():
    from reports.tables import teacher_description
    recipe = {"epochs": 240, "batch_size": 64, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
              "lr_decay_epochs": [150, 180, 210], "lr_decay_rate": 0.1}
    assert teacher_description({"source": "trained", "seed": 0, "epochs": 240, "recipe": recipe}) == (
        "trained by kdbench: 240 epochs, seed 0, batch 64, lr 0.05, ×0.1 at 150/180/210, wd 0.0005")
    assert teacher_description({"source": "cache", "seed": 1, "recipe": {**recipe, "epochs": 30}}) == (
        "trained by kdbench (loaded from the teacher cache): 30 epochs, seed 1, batch 64, lr 0.05, "
        "×0.1 at 150/180/210, wd 0.0005")
    sha = "0123456789abcdef" * 4
    assert teacher_description({"source": "imported", "file": "resnet32x4_vanilla.pth", "weights_sha": sha,
                                "path": "/w/x/resnet32x4_vanilla.pth", "arch": "resnet32x4"}) == (
        "imported: `x/resnet32x4_vanilla.pth` as resnet32x4, weights sha256 `0123456789ab`")
    # older records: no file, no hash, no recipe, no architecture
    assert teacher_description({"source": "imported", "path": "/w/ckpt/wrn_40_2.pth"}) == (
        "imported: `ckpt/wrn_40_2.pth`, architecture not recorded, weights hash not recorded")
    assert teacher_description({"source": "imported", "file": "a.pth", "arch": "resnet8"}) == (
        "imported: `a.pth` as resnet8, weights hash not recorded")
    assert teacher_description({"source": "trained"}) == (
        "trained by kdbench: epochs not recorded, seed not recorded, recipe not recorded")
    assert teacher_description({"source": "trained"}, ({**recipe, "epochs": 20}, 0)) == (
        "trained by kdbench: 20 epochs, seed 0, batch 64, lr 0.05, ×0.1 at 150/180/210, wd 0.0005 "
        "(recipe and seed from grid.json: the records do not carry them)")
    assert teacher_description({}) == "source not recorded"


def test_teacher_table_and_mixed_teacher_warning(tmp_path):
    import reports
    from reports import tables
    sha = "feedfacecafebeef" * 4

    def info(method, pair, seed):
        if pair == B:
            return {"key": "imported-1a2b3c", "top1": 74.64, "source": "imported", "path": "/w/vgg13.pth",
                    "file": "vgg13.pth", "weights_sha": sha}
        # seed 2 of crd on A used another teacher: must be shouted, not averaged away
        key = "t-other" if (method, seed) == ("crd", 2) else "t-main"
        return {**trained_teacher(method, pair, seed), "key": key}
    root = make_results(tmp_path / "g", config=published_config, grid_config=PUBLISHED_GRID_CONFIG,
                        teacher_info=info)
    res = agg.load_results(root)
    groups = tables.teacher_groups(res)
    rows = table_list(tables.teacher_section(res, groups))
    assert rows[1] == ["resnet32x4 → resnet8x4", "resnet32x4", "trained by kdbench: 240 epochs, seed 0, batch 64, "
                       "lr 0.05, ×0.1 at 150/180/210, wd 0.0005", "79.42", "`t-main`"]
    assert rows[2][4] == "`t-other`"
    # the record names no architecture: the pair's teacher is the one its weights were loaded into
    assert rows[3] == ["vgg13 → MobileNetV2", "vgg13", "imported: `w/vgg13.pth` as vgg13, weights sha256 "
                       "`feedfacecafe`", "74.64", "`imported-1a2b3c`"]
    warn = tables.teacher_warnings(groups)
    assert warn == ["> **WARNING: pair resnet32x4 → resnet8x4 mixes 2 different teachers** (`t-main` (8 runs), "
                    "`t-other` (1 run)): its rows compare students distilled from different teachers, and its "
                    "numbers should not be read as one cell."]
    text = reports.render_report(res, catalogue=CATALOGUE)
    assert warn[0] in text.split("## 1.")[0]  # at the top, before any table
    assert "**Teachers**" in text.split("## 1.")[0]


def test_stale_records_are_counted_in_the_header(tmp_path):
    from reports import sections
    root = make_results(tmp_path / "g")
    stale = root / "runs" / "stale"
    for rid in ("kd__resnet32x4-resnet8x4__s0", "crd__resnet32x4-resnet8x4__s0", "vanilla__vgg13-MobileNetV2__s1"):
        write_json(stale / f"{rid}.json", {"run_id": rid, "status": "complete"})
    (stale / "kd__resnet32x4-resnet8x4__s0.metrics.jsonl").write_text("{}\n")
    res = agg.load_results(root)
    assert res.stale == 3
    assert res.counts()["complete"] == 16  # the stale ones are in no table
    head = sections.grid_header(res)
    assert ("- **3 records made under another protocol were moved to runs/stale/ and are not in this report**"
            in head)
    (stale / "kd__resnet32x4-resnet8x4__s0.json").unlink()
    (stale / "crd__resnet32x4-resnet8x4__s0.json").unlink()
    assert "**1 record made under another protocol was moved to runs/stale/" in sections.grid_header(agg.load_results(root))
    (stale / "vanilla__vgg13-MobileNetV2__s1.json").unlink()
    assert "stale" not in sections.grid_header(agg.load_results(root))


# ---------------------------------------------------------------------------- issue 19: figures
def _rgb(c):
    from matplotlib.colors import to_rgb
    return tuple(round(x, 6) for x in to_rgb(c))


def test_method_colour_is_the_same_in_reports_with_different_method_sets(built, tmp_path):
    from reports import figures
    root, _ = built
    # the same records under a grid that lists other methods, in another order: kd comes first
    other = tmp_path / "other"
    (other / "runs").mkdir(parents=True)
    for f in (root / "runs").glob("*.json"):
        (other / "runs" / f.name).write_bytes(f.read_bytes())
    write_json(other / "grid.json", {"name": "o", "preset": "test", "dataset": "cifar100", "methods": ["kd", "crd"],
                                     "pairs": [A, B], "seeds": SEEDS, "config": {}})
    kd = _rgb(figures.method_color("kd", CATALOGUE))
    assert kd != _rgb(figures.method_color("crd", CATALOGUE)) and kd != _rgb(figures.method_color("vanilla", CATALOGUE))
    seen = []
    with figures._style():
        for r in (root, other):
            res = agg.load_results(r)
            last = agg.cell_stats(res, "top1_last")
            pal = figures.palette(agg.method_order(res.grid), CATALOGUE)
            bars = figures.bars_figure(res, last, agg.teacher_top1(res), pal)
            seen += [_rgb(p.get_facecolor()) for ax in bars.axes for p in ax.patches if p.get_gid() == "kd"]
            cost = figures.cost_figure(res, agg.mean_table(last), agg.cost_table(res), pal)
            seen += [_rgb(c.get_facecolor()[0]) for ax in cost.axes for c in ax.collections if c.get_gid() == "kd"]
    # 2 pairs of bars + 1 point, in each of the two reports (the curves colour pairs: a panel per method)
    assert len(seen) == 6 and set(seen) == {kd}


def test_registered_methods_and_compositions_never_share_a_colour():
    from methods import list_methods, modified_methods
    from reports import figures
    names = list_methods() + [f"{m}+kd" for m in list_methods() if m not in ("kd", "vanilla")] + ["crd+kd"]
    names += modified_methods()
    colours = {n: _rgb(figures.method_color(n, CATALOGUE)) for n in names}
    assert len(set(colours.values())) == len(set(names))
    # deterministic, and independent of which methods a grid lists
    assert figures.palette(["kd"], CATALOGUE)["kd"] == figures.palette(["vanilla", "crd", "kd"], CATALOGUE)["kd"] == figures.method_color("kd", CATALOGUE)
    # an unregistered name takes a colour no registered method holds
    reserved = {_rgb(figures.method_color(n, CATALOGUE)) for n in list_methods()}
    assert _rgb(figures.method_color("not-a-method-xyz", CATALOGUE)) not in reserved


def test_heatmap_scale_is_robust_and_annotates_the_clipped_cell():
    from reports import figures
    # gains vs vanilla: |g| sorted = .5 .8 1 1.5 2 2.5 3 22; 75th percentile (linear) = 2.5 + .25 * .5 = 2.625
    # -> L = min(22, max(2 * 2.625, 1)) = 5.25: only pair's -22 is beyond
    means = pd.DataFrame({"P1:p1": [70.0, 71.0, 72.0, 71.5, 69.5], "P2:p2": [60.0, 63.0, 60.8, 62.5, 38.0]},
                         index=["vanilla", "kd", "crd", "at", "pair"])
    lim, clipped = figures.heatmap_scale((means - means.loc["vanilla"]).drop(index="vanilla").to_numpy())
    assert lim == pytest.approx(5.25)
    assert clipped.tolist() == [[False, False], [False, False], [False, False], [False, True]]
    with figures._style():
        fig = figures.heatmap_figure(means)
    ax = fig.axes[0]
    texts = sorted(t.get_text() for t in ax.texts)
    assert texts == sorted(["+1.00", "+3.00", "+2.00", "+0.80", "+1.50", "+2.50", "-0.50", "-22.00*"])
    mesh = ax.collections[0]
    assert mesh.get_clim() == pytest.approx((-5.25, 5.25))  # centred at zero
    assert "clipped at ±5.25" in fig.axes[1].get_ylabel()
    assert figures._heatmap_note(means) == " Here L = 5.25 pp; 1 cell beyond it."


def _boxes_overlap(a, b) -> bool:
    return min(a.x1, b.x1) - max(a.x0, b.x0) > 0.5 and min(a.y1, b.y1) - max(a.y0, b.y0) > 0.5


@pytest.mark.parametrize("pairs", [[A], [A, B]])
def test_curves_of_a_one_epoch_grid(tmp_path, pairs):
    import json
    from reports import figures
    root = make_results(tmp_path / "g")
    for f in (root / "runs").glob("*.json"):
        rec = json.loads(f.read_text())
        rec["history"] = [{**h, "epoch": 1} for h in rec["history"][-1:]]
        write_json(f, rec)
    grid = json.loads((root / "grid.json").read_text())
    write_json(root / "grid.json", {**grid, "pairs": pairs})
    res = agg.load_results(root)
    with figures._style():
        fig = figures.curves_figure(res)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == ["vanilla: test top-1 (%)", "kd − vanilla (pp)", "crd − vanilla (pp)"]
    for ax in panels:
        (method,) = {ln.get_gid() for ln in ax.lines if ln.get_gid()}
        drawn = [ln for ln in ax.lines if ln.get_gid() == method]
        assert len(drawn) == len(pairs)  # one point per pair
        assert all(list(ln.get_xdata()) == [1] and ln.get_marker() == "o" for ln in drawn)
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert ticks == [1.0]  # one integer tick, no 0.96/0.98/1.02...
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    legend = fig.legends[0].get_window_extent(r)
    title = fig._suptitle.get_window_extent(r)
    for ax in panels:
        assert not _boxes_overlap(legend, ax.get_tightbbox(r))
        assert not _boxes_overlap(title, ax.get_tightbbox(r))
    assert not _boxes_overlap(legend, title)


def test_same_and_cross_architecture_follow_the_family():
    from kdcore.models.registry import model_family
    expect = {"resnet8": "resnet", "resnet32x4": "resnet", "resnet110": "resnet", "ResNet50": "resnet",
              "timm:resnet18": "resnet", "timm:resnet10t": "resnet", "wrn_40_2": "wrn", "wrn_16_1": "wrn",
              "vgg13": "vgg", "vgg8": "vgg", "MobileNetV2": "mobilenet", "ShuffleV1": "shufflenet",
              "ShuffleV2": "shufflenet", "timm:mobilenetv3_large_100": "mobilenet",
              "timm:efficientnet_b0": "efficientnet", "timm:convnext_tiny": "convnext"}
    assert {n: model_family(n) for n in expect} == expect
    assert agg.is_same_arch("timm:resnet18", "timm:resnet10t")
    assert agg.is_same_arch("resnet32x4", "resnet8x4")
    assert not agg.is_same_arch("vgg13", "MobileNetV2")
    assert not agg.is_same_arch("timm:resnet18", "timm:efficientnet_b0")


def test_a_report_built_without_the_method_registry_says_what_it_did_not_compare(tmp_path):
    """``reports`` never imports ``methods``: a library user who builds a report without the catalogue gets every
    table, and section 4 says that the methods' hyperparameters were not compared (instead of a silent match)."""
    root = make_results(tmp_path / "g", config=published_config, grid_config=PUBLISHED_GRID_CONFIG,
                        teacher_info=trained_teacher)
    res = agg.load_results(root)
    from reports import tables
    sec = tables.published_section(res, agg.cell_stats(res, "top1_last"), agg.cell_stats(res, "top1_best"),
                                   agg.teacher_top1(res), None)
    rows = diff_rows(sec)
    assert rows and all(r[1:3] == ["not compared", "registered defaults (the report was built without the method "
                                   "registry)"] for r in rows), rows
    assert {r[0] for r in rows} == {"`method.vanilla`", "`method.kd`", "`method.crd`"}
    assert diff_rows(published_text(root)) == []  # with the registry: the same runs match the protocol


def test_colours_follow_the_registry_as_it_is_now_not_as_it_was_first_read():
    """A method registered and removed again in one process (a guide's example, a user's file) leaves the
    other colours as the registry now implies (the reserved names were once cached per catalogue object)."""
    from reports import figures

    class Growing:
        extra: list[str] = []

        def names(self):
            return CATALOGUE.names() + self.extra

        def reference_hparams(self, method, overrides):
            return CATALOGUE.reference_hparams(method, overrides)

    cat = Growing()
    cat.extra = [f"user_method_{i}" for i in range(20)]  # 20 more reserved names: a larger palette
    during = figures.method_color("kd", cat)
    cat.extra = []
    assert figures.method_color("kd", cat) == figures.method_color("kd", CATALOGUE) != during
