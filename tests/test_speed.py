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
    assert (f"runs the teacher once instead of 2 times" in md
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
    args = speed.build_parser().parse_args(TINY + ["--channels-last", "on"])
    speed.resolve(args)
    assert speed.harness_kwargs(speed.FastPaths(args.amp, args.channels_last, args.teacher_inference_mode,
                                                args.compile).resolve(torch.device("cpu")))["fast"]["channels_last"]


def test_memory_probe_reports_an_increase():
    args = speed.build_parser().parse_args(TINY)
    speed.resolve(args)
    res = speed.memory_probe(args, "solo:kd")
    assert res["increase_mb"] >= 0 and res["peak_mb"] >= res["base_mb"] > 0


def test_cohort_bound_by_hand():
    """Solo times 1 + 3 + 3 s; batch 0.1 s and teacher 2 s per 10 steps; kd and fitnet use the teacher.

    The cohort saves 2 batch draws and 1 teacher pass: 2 * 0.1 + 2 = 2.2 s of 7 s, so the bound is
    7 / 4.8 = 1.458333...; per step the teacher takes 200 ms and a batch 10 ms.
    """
    args = speed.build_parser().parse_args(["--methods", "vanilla,kd,fitnet", "--steps", "10"])
    speed.resolve(args)
    raw = {"solo": {"vanilla": [1.0], "kd": [3.0], "fitnet": [3.0]}, "shared": [{"data": 0.1, "teacher": 2.0}]}
    got = speed.cohort_bound(args, raw)
    assert got["teacher_users"] == 2
    assert abs(got["cohort_over_solo_bound"] - 7 / 4.8) < 1e-12
    assert abs(got["saved_share_of_solo"] - 2.2 / 7) < 1e-12
    assert abs(got["teacher_forward_ms"] - 200.0) < 1e-9 and abs(got["batch_ms"] - 10.0) < 1e-9
