"""Smoke test of ``python -m benchmarks.speed``: tiny settings, in process, no timing assertions."""
from __future__ import annotations

import json
import re

import torch

from benchmarks import speed

TINY = ["--methods", "kd,triplet", "--pair", "resnet8:resnet8", "--image-size", "8", "--num-train", "128",
        "--batch-size", "16", "--steps", "2", "--warmup", "1", "--repeats", "1", "--workers", "0",
        "--device", "cpu"]


def test_speed_writes_table_and_json(tmp_path, capsys):
    out = tmp_path / "speed"
    assert speed.main(TINY + ["--no-memory", "--out", str(out)]) == 0
    md = (out / "speed.md").read_text()
    assert md == capsys.readouterr().out  # what it prints is what it writes
    number = r"\s*[0-9]+(\.[0-9]+)?\s*"
    for m in ("kd", "triplet"):
        row = next(line for line in md.splitlines() if line.startswith(f"| {m} "))
        cells = [c for c in row.strip().strip("|").split("|")]
        # method | plain img/s | solo img/s | solo/plain | memory
        assert all(re.fullmatch(number, c) for c in cells[1:4]), row
        assert float(cells[3]) > 0
    assert "cohort/solo" in md and "images/s = (training images stepped, per student)" in md
    assert "harness fast paths: device cpu, amp fp32, channels_last no, teacher_inference_mode no, compile no" in md

    rec = json.loads((out / "speed.json").read_text())
    assert {"config", "data", "quick_reductions", "fast_paths", "throughput_definition", "environment",
            "results", "targets", "memory", "raw_seconds", "wall_s"} <= set(rec)
    assert {"python", "torch", "device", "threads", "cpu_model"} <= set(rec["environment"])
    assert set(rec["results"]["methods"]) == {"kd", "triplet"}
    for r in rec["results"]["methods"].values():
        assert {"plain_img_s", "solo_img_s", "solo_over_plain"} <= set(r) and r["solo_img_s"] > 0
    assert {"plain_img_s", "solo_img_s", "cohort_img_s", "cohort_over_solo", "cohort_over_plain",
            "solo_over_plain"} <= set(rec["results"]["overall"])
    assert len(rec["raw_seconds"]["cohort"]) == 1 and len(rec["raw_seconds"]["plain"]["kd"]) == 1
    # the shared part (batch + teacher forward) is timed in the same repeat, and the bound it implies is printed
    assert len(rec["raw_seconds"]["shared"]) == 1 and rec["raw_seconds"]["shared"][0]["teacher"] > 0
    overall = rec["results"]["overall"]
    assert overall["teacher_users"] == 2 and overall["cohort_over_solo_bound"] > 1
    assert ("runs the teacher once instead of 2 times" in md
            and f"reaches cohort/solo = {overall['cohort_over_solo_bound']:.2f}" in md)
    assert rec["fast_paths"] == {"device": "cpu", "amp": "fp32", "channels_last": False,
                                 "teacher_inference_mode": False, "compile": False}
    assert rec["quick_reductions"] == []
    # triplet's plain loop loads a negative image per sample, as the authors' dataset does
    assert rec["plain_data_needs"]["triplet"]["negatives"] is True


def test_plain_dataset_supplies_what_methods_draw():
    data = speed.synthetic_data(64, 8, num_classes=4, num_test=4)
    ds = speed.PlainDataset(data, negatives=True, contrast_k=5)
    img, target, index, neg, sample = ds[3]
    assert img.shape == neg.shape == (3, 8, 8) and index == 3
    assert sample.shape == (6,) and sample[0] == 3
    labels = data.train_labels
    assert bool((labels[torch.as_tensor(sample[1:])] != target).all())


def test_fast_path_flags_reach_the_harness(tmp_path):
    """--channels-last on: the harness runs channels_last and the record says so."""
    out = tmp_path / "cl"
    argv = TINY + ["--methods", "kd", "--no-memory", "--channels-last", "on", "--out", str(out)]  # last wins
    assert speed.main(argv) == 0
    rec = json.loads((out / "speed.json").read_text())
    assert rec["fast_paths"]["channels_last"] is True and rec["fast_paths"]["amp"] == "fp32"
    assert rec["input_layouts"]["harness_weights"] == "channels_last"
    assert "harness fast paths: device cpu, amp fp32, channels_last yes, teacher_inference_mode no" in \
        (out / "speed.md").read_text()
    options = speed.resolve(speed.build_parser().parse_args(TINY + ["--channels-last", "on"]))
    assert speed.harness_kwargs(speed.FastPaths(options.amp, options.channels_last, options.teacher_inference_mode,
                                                options.compile).resolve(torch.device("cpu")))["fast"]["channels_last"]


def test_memory_probe_reports_an_increase():
    options = speed.resolve(speed.build_parser().parse_args(TINY))
    res = speed.memory_probe(options, "solo:kd")
    assert res["increase_mb"] >= 0 and res["peak_mb"] >= res["base_mb"] > 0


def test_cohort_bound_by_hand():
    """Solo times 1 + 3 + 3 s; batch 0.1 s and teacher 2 s per 10 steps; kd and fitnet use the teacher.

    The cohort saves 2 batch draws and 1 teacher pass: 2 * 0.1 + 2 = 2.2 s of 7 s, so the bound is
    7 / 4.8 = 1.458333...; per step the teacher takes 200 ms and a batch 10 ms.
    """
    options = speed.resolve(speed.build_parser().parse_args(["--methods", "vanilla,kd,fitnet", "--steps", "10"]))
    raw = {"solo": {"vanilla": [1.0], "kd": [3.0], "fitnet": [3.0]}, "shared": [{"data": 0.1, "teacher": 2.0}]}
    got = speed.cohort_bound(options, raw)
    assert got["teacher_users"] == 2
    assert abs(got["cohort_over_solo_bound"] - 7 / 4.8) < 1e-12
    assert abs(got["saved_share_of_solo"] - 2.2 / 7) < 1e-12
    assert abs(got["teacher_forward_ms"] - 200.0) < 1e-9 and abs(got["batch_ms"] - 10.0) < 1e-9


def test_breakdown_compare_by_hand():
    """Solo vanilla 100 ms (data 2), solo kd 300 ms (data 2, teacher 150); cohort 260 ms (data 2, teacher 150).

    Shared: solo 2 + 2 + 150 = 154, cohort 152. Students' own: solo 98 + 148 = 246, cohort 108 (so 108/246 of
    their solo time); cohort/solo = 400 / 260.
    """
    def row(kind, method, data, teacher, total):
        ms = {p: 0.0 for p in speed.PARTS}
        ms.update({"data": data, "teacher fwd": teacher, "backward": total - data - teacher, "other": 0.0,
                   "total": total})
        return {"kind": kind, "method": method, "ms": ms}

    rows = [row("plain", "vanilla", 30, 0, 500), row("solo", "vanilla", 2, 0, 100),
            row("plain", "kd", 30, 200, 900), row("solo", "kd", 2, 150, 300), row("cohort", "all 2", 2, 150, 260)]
    got = speed.breakdown_compare(rows)
    assert got == {"solo_shared_ms": 154.0, "cohort_shared_ms": 152.0, "solo_student_ms": 246.0,
                   "cohort_student_ms": 108.0, "student_cohort_over_solo": 108 / 246, "cohort_over_solo": 400 / 260}
    text = speed.render_breakdown(rows)
    assert ("cohort against the 2 solo runs summed (ms per step): shared parts (batch, teacher forward) 152 against "
            "154; the students' own parts (everything else) 108 against 246, i.e. 0.44x their solo time; "
            "cohort/solo of this measurement 1.54.") in text
    assert speed.breakdown_compare(rows[:4]) is None  # no cohort row, nothing to compare


def test_breakdown_times_the_parts(tmp_path):
    """--breakdown: one row per configuration, each part timed; only the teacher's users spend time in it."""
    out = tmp_path / "bd"
    argv = TINY + ["--methods", "vanilla,kd", "--no-memory", "--breakdown", "--out", str(out)]
    assert speed.main(argv) == 0
    rec = json.loads((out / "speed.json").read_text())
    rows = rec["breakdown_ms_per_step"]
    assert [(r["kind"], r["method"]) for r in rows] == [("plain", "vanilla"), ("solo", "vanilla"), ("plain", "kd"),
                                                        ("solo", "kd"), ("cohort", "all 2")]
    for r in rows:
        ms = r["ms"]
        assert ms["student fwd"] > 0 and ms["backward"] > 0 and ms["optimizer"] > 0
        assert (ms["teacher fwd"] > 0) == (r["method"] != "vanilla"), r
    assert rec["breakdown_cohort_vs_solo"] == speed.breakdown_compare(rows)
    md = (out / "speed.md").read_text()
    assert re.search(r"^\| cohort +\| all 2 +\|", md, re.M) and "cohort against the 2 solo runs summed" in md


def test_a_method_with_a_pre_training_stage_is_one_line_before_any_timing(tmp_path, capsys):
    code = speed.main(["--quick", "--dataset", "synthetic", "--pair", "resnet8:resnet8", "--methods", "kd,ft",
                       "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["error: ft trains a pre-training stage first (init, 30 epochs), which the speed "
                                 "benchmark does not time: leave it out of --methods"]
    assert not (tmp_path / "out").exists()
