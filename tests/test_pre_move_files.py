"""Files written before the layout move (library ``kdcore`` below, application ``benchmarks`` on top) still
read: a run record and a teacher cache entry made by the code of commit 9dd1132, when models, data, the loop,
records and presets lived in ``benchmarks`` (``tests/fixtures/pre_move``; the run's weights left out to keep
the fixture small: nothing here reads them).

Made with, at 9dd1132:
    python -m benchmarks.run --pairs resnet8:resnet8 --methods kd --seeds 0 --epochs 1 \
        --set teacher_train.epochs=1 --results <dir> --threads 1
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from benchmarks.run import main

FIXTURE = Path(__file__).parent / "fixtures" / "pre_move"
ARGS = ["--pairs", "resnet8:resnet8", "--methods", "kd", "--epochs", "1", "--set", "teacher_train.epochs=1",
        "--threads", "1"]
RUN = "digits-fad5c137/runs/kd__resnet8-resnet8__s0.json"
TEACHER = "teachers/digits/resnet8__s0__735b8ed72982"


def test_a_record_and_a_teacher_made_before_the_move_are_reused(tmp_path, capsys):
    results = tmp_path / "results"
    shutil.copytree(FIXTURE, results)
    record_before = (results / RUN).read_bytes()
    teacher_before = (results / f"{TEACHER}.pt").read_bytes()

    # the same command: the old record is complete under today's fingerprint, nothing trains
    assert main(ARGS + ["--seeds", "0", "--results", str(results)]) == 0
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert "grid digits-fad5c137: 1 run, 1 already complete, 0 to run" in out, out
    assert (results / RUN).read_bytes() == record_before
    assert not (results / "digits-fad5c137/runs/stale").exists()
    report = (results / "digits-fad5c137/report.md").read_text(encoding="utf-8")
    assert "1 complete, 0 failed, 0 missing" in report
    assert f"{json.loads(record_before)['metrics']['top1_last']:.2f}" in report  # 10.44

    # a new seed: its student trains, taught by the teacher cached before the move (not retrained)
    assert main(ARGS + ["--seeds", "1", "--results", str(results), "--grid", "seed1"]) == 0
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert "teacher resnet8: training" not in out and "to be trained" not in out, out
    assert (results / f"{TEACHER}.pt").read_bytes() == teacher_before
    record = json.loads((results / "seed1/runs/kd__resnet8-resnet8__s1.json").read_text())
    assert record["status"] == "complete"
    assert record["teacher_info"]["key"] == "735b8ed72982"
    assert record["teacher_info"]["top1"] == json.loads((results / f"{TEACHER}.json").read_text())["top1"]
