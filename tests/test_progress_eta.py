"""What the terminal says while a grid runs (issue #31): an estimate from timed work only, the stage a run is in,
one line per cohort, counts in the right number, and where each teacher comes from in ``--dry-run``."""
from __future__ import annotations

import io
import re
import sys
from pathlib import Path

import torch

from kdcore import checkpoints
from benchmarks import grid
from benchmarks import teachers as teacher_cli
from kdcore.models import create_model
from benchmarks.progress import LineProgress, Remaining
from kdcore.text import plural
from benchmarks.run import main
from kdcore.train import StudentRun
from conftest import THREADS, write_cifar

PAIR = "resnet8:resnet8"
TINY = ["--pairs", PAIR, "--seeds", "0", "--set", "teacher_train.epochs=1", "--no-report"]


def fake_clock():
    now = [0.0]
    return now, lambda: now[0]


def test_plural():
    assert [plural(k, "student epoch") for k in (0, 1, 2)] == ["0 student epochs", "1 student epoch",
                                                              "2 student epochs"]


def test_the_estimate_times_students_apart_from_teachers_and_resumed_epochs():
    """10 student epochs, 2 teachers to train (4 and 2 epochs). Hand-computed: the first teacher takes 120 s of
    wall time (100 s of its own training: 25 s per epoch, so 50 s for the other's 2 epochs); 2 student epochs
    resume (no time); 2 are trained in 20 s: 10 s each, 60 s for the 6 left. Dividing the elapsed time by the
    epochs counted would say 140 / 4 * 6 = 210 s, teachers included and resumed epochs counted as trained."""
    now, clock = fake_clock()
    out = io.StringIO()
    bar = LineProgress(10, "student epoch", out, interval=0.0, clock=clock, teachers={"resnet8": 4, "resnet14": 2})
    assert bar.line() == ("progress: 0/10 student epochs (0%), 0:00 elapsed, students: estimating...; "
                          "2 teachers to train: estimating...")
    bar.remaining.teacher_begins()
    now[0] = 120.0
    bar.remaining.teacher_ready("resnet8", {"source": "trained", "epochs": 4, "time_s": 100.0})
    bar.skip(2)  # resumed: counted, not timed
    now[0] = 140.0
    bar.update(2)
    assert out.getvalue().splitlines() == [
        "progress: 2/10 student epochs (20%), 2:00 elapsed, students: estimating...; 1 teacher to train: about 0:50",
        "progress: 4/10 student epochs (40%), 2:20 elapsed, about 1:50 left (students 1:00, 1 teacher to train 0:50)",
    ]
    # the second teacher, cached: its 10 s are not the students', and it sets no pace (its time_s is not ours)
    bar.remaining.teacher_begins()
    now[0] = 150.0
    bar.remaining.teacher_ready("resnet14", {"source": "cache", "epochs": 2, "time_s": 999.0})
    now[0] = 190.0
    bar.update(3)  # 60 s of students for 5 epochs timed: 12 s each, 36 s for the 3 left
    assert out.getvalue().splitlines()[-1] == "progress: 7/10 student epochs (70%), 3:10 elapsed, about 0:36 left"
    now[0] = 200.0
    bar.update(3)
    bar.close()  # the last line said the final count, without an estimate: not repeated
    assert out.getvalue().splitlines()[2:] == ["progress: 7/10 student epochs (70%), 3:10 elapsed, about 0:36 left",
                                               "progress: 10/10 student epochs (100%), 3:20 elapsed"]


def test_each_pair_is_estimated_at_its_own_pace():
    """Two pairs whose students cost 1 s and 3 s an epoch (fashion: oki2020_student against resnet8). Hand-computed:
    after 4 epochs of the cheap pair (4 s) the expensive one's 6 are at the grid's pace, 1 s: 2 + 6 = 8 s left; once
    3 of its epochs took 9 s, its 3 left take 9 s and the cheap pair's 2 take 2 s: 11 s (the grid's pace, 13 s / 7
    epochs, would say 5 * 13 / 7 = 9.3 s). A group's skipped epochs are done, not timed."""
    now, clock = fake_clock()
    remaining = Remaining(12, clock=clock, groups={"cheap": 6, "dear": 6})
    now[0] = 4.0
    remaining.trained(4, "cheap")
    assert remaining.students_s() == 8.0 and remaining.text() == "about 0:08 left"
    now[0] = 13.0
    remaining.trained(3, "dear")
    assert remaining.students_s() == 11.0
    remaining.counted(1, "dear")  # a run that cannot run its pair: 2 left of "dear", at 3 s
    assert remaining.students_s() == 8.0
    assert Remaining(4, clock=clock).students_s() is None  # nothing timed: estimating...


def test_a_grid_that_ends_short_of_its_count_ends_without_an_estimate():
    now, clock = fake_clock()
    out = io.StringIO()
    bar = LineProgress(4, "student epoch", out, interval=0.0, clock=clock)
    now[0] = 10.0
    bar.update(2)
    bar.close()
    assert out.getvalue().splitlines() == ["progress: 2/4 student epochs (50%), 0:10 elapsed, about 0:10 left",
                                           "progress: 2/4 student epochs (50%), 0:10 elapsed"]
    remaining = Remaining(1, {"resnet8": 3}, clock)
    remaining.counted(1)
    assert remaining.text() is None  # no student left: no teacher is needed either


def test_the_grid_times_students_without_the_teacher(monkeypatch, capsys, tmp_path):
    """A fake clock that moves 1000 s while the teacher is fetched and 10 s per run-epoch (the teacher's one epoch
    too, inside those 1000 s): after the first cohort epoch of 2 runs, 2 run-epochs are left at 10 s each."""
    now, clock = fake_clock()
    real_teacher, real_end = grid.get_teacher, StudentRun.end_epoch

    def slow_teacher(*a, **k):
        now[0] += 1000.0
        return real_teacher(*a, **k)

    def end_epoch(self, *a, **k):
        now[0] += 10.0
        return real_end(self, *a, **k)

    monkeypatch.setattr(grid, "get_teacher", slow_teacher)
    monkeypatch.setattr(StudentRun, "end_epoch", end_epoch)
    monkeypatch.setattr(grid, "make_progress", lambda total, unit, teachers, groups: LineProgress(
        total, unit, sys.stderr, interval=0.0, clock=clock, teachers=teachers, groups=groups))
    assert main(["--results", str(tmp_path), "--grid", "g", "--methods", "vanilla,kd", "--epochs", "2", *TINY]) == 0
    lines = capsys.readouterr().err.splitlines()
    progress = [line.split(";")[0] for line in lines if line.startswith(("progress: ", "estimate: "))]
    assert progress == ["progress: 2/4 student epochs (50%), 17:10 elapsed, about 0:20 left",
                        "estimate: about 0:20 left, at 10.0s per student epoch so far",
                        "progress: 4/4 student epochs (100%), 17:30 elapsed"]


def test_a_one_epoch_grid_gives_no_estimate_after_it_finished(capsys, tmp_path):
    assert main(["--results", str(tmp_path), "--grid", "g", "--methods", "vanilla", "--epochs", "1", *TINY]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert not [line for line in lines if line.startswith("estimate") or " left" in line]
    assert lines[0].startswith("grid g: 1 run, 0 already complete, 1 to run on cpu -> ")
    assert lines[1].startswith(f"plan: 1 run as 1 cohort, 1 student epoch on cpu, threads: {THREADS} (OMP_NUM_THREADS); "
                               "teacher resnet8 to be trained by "
                               "kdbench (1 epoch) into ")
    assert lines[2].startswith("teacher resnet8: training (1 epoch, seed 0) -> ")
    assert lines[3].startswith("teacher resnet8: test top-1 ") and " after 1 epoch (" in lines[3]
    assert lines[4:6] == ["cohort resnet8:resnet8 s0: 1 run (vanilla)", lines[5]]
    assert lines[5].startswith("progress: 1/1 student epoch (100%), ") and \
        "; resnet8:resnet8 s0 ep 1/1: best vanilla " in lines[5]
    assert lines[6].startswith("done in ") and len(lines) == 7


def test_a_failed_runs_epochs_are_done_not_left(capsys, tmp_path):
    """kd diverges in its first step: the epochs it will never train count as done (untimed), so the progress
    ends at its total, not at 0/2 with time "left"."""
    assert main(["--results", str(tmp_path), "--grid", "g", "--methods", "kd", "--epochs", "2",
                 "--set", "train.lr=1e30", "--set", "teacher_train.lr=0.05", *TINY]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(",")[0] for line in lines if line.startswith("progress: ")] == [
        "progress: 2/2 student epochs (100%)"]
    assert "1 run failed: kd__resnet8-resnet8__s0 (errors in " in lines[-2]


def test_progress_shows_the_stage_and_a_cohort_is_one_line_with_its_resumed_runs(monkeypatch, capsys, tmp_path):
    """ab trains a 1-epoch init stage first: the cohort's stream has 3 epochs for a 2-epoch grid. The display says
    where each run is instead of "ep 3"; a resumed cohort is one line saying who resumes where."""
    monkeypatch.setattr(grid, "make_progress", lambda total, unit, teachers, groups: LineProgress(
        total, unit, sys.stderr, interval=0.0, teachers=teachers, groups=groups))
    argv = ["--results", str(tmp_path), "--grid", "g", "--methods", "vanilla,ab", "--epochs", "2",
            "--set", "ab.init_epochs=1", *TINY]
    real, saved = checkpoints.save_run, []

    def save_then_stop(*a, **k):  # both runs checkpoint after the stream's first epoch, then the process stops
        real(*a, **k)
        saved.append(1)
        if len(saved) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoints, "save_run", save_then_stop)
    assert main(argv) == 130
    first = capsys.readouterr().err.splitlines()
    assert [line for line in first if line.startswith(("cohort ", "run "))] == ["cohort resnet8:resnet8 s0: 2 runs"]
    monkeypatch.setattr(checkpoints, "save_run", real)
    assert main(argv) == 0
    lines = capsys.readouterr().err.splitlines()
    assert [line for line in lines if line.startswith(("cohort ", "run "))] == [
        "cohort resnet8:resnet8 s0: 2 runs, 2 resumed: vanilla from ep 2/2; ab from ep 1/2"]
    progress = [line for line in lines if line.startswith("progress: ")]
    assert [line.split("; ")[-1].split(": best")[0] for line in progress[2:]] == [
        "resnet8:resnet8 s0 ep 2/2, ab ep 1/2", "resnet8:resnet8 s0 ep 2/2"]
    # the resumed epochs count, untimed: no estimate until one was trained here
    for line, count in zip(progress, ("1/5 student epochs (20%)", "2/5 student epochs (40%)")):
        assert line.startswith(f"progress: {count}, ") and line.endswith(" elapsed, students: estimating...")
    assert len(progress) == 4


def test_the_stage_of_each_run_in_a_fresh_cohort(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(grid, "make_progress", lambda total, unit, teachers, groups: LineProgress(
        total, unit, sys.stderr, interval=0.0, teachers=teachers, groups=groups))
    assert main(["--results", str(tmp_path), "--grid", "g", "--methods", "vanilla,kd,ab", "--epochs", "2",
                 "--set", "ab.init_epochs=1", *TINY]) == 0
    lines = capsys.readouterr().err.splitlines()
    at = [line.split("; ")[-1].split(": best")[0] for line in lines if line.startswith("progress: ")]
    assert at == ["resnet8:resnet8 s0 ep 1/2, ab stage init 1/1", "resnet8:resnet8 s0 ep 2/2, ab ep 1/2",
                  "resnet8:resnet8 s0 ep 2/2"]
    assert [line for line in lines if line.startswith(("cohort ", "run "))] == ["cohort resnet8:resnet8 s0: 3 runs"]


def dry_run(capsys, *argv) -> list[str]:
    assert main([*argv, "--dry-run"]) == 0
    return [line for line in capsys.readouterr().out.splitlines() if line.startswith("  teacher ")]


def test_dry_run_says_where_each_teacher_comes_from(capsys, tmp_path):
    argv = ["--results", str(tmp_path), "--grid", "g", "--methods", "vanilla", "--epochs", "1", *TINY]
    lines = dry_run(capsys, *argv)
    found = re.fullmatch(rf"  teacher resnet8: to be trained by kdbench \(1 epoch\) into "
                         rf"({re.escape(str(tmp_path))}/teachers/digits/resnet8__s0__(\w+)\.pt), key (\w+)", lines[0])
    assert len(lines) == 1 and found and found[2] == found[3], lines
    path, key = Path(found[1]), found[3]
    assert not path.exists()
    assert main(argv) == 0
    assert path.is_file()
    assert dry_run(capsys, *argv) == [f"  teacher resnet8: cached in {path} (trained by kdbench earlier), key {key}"]
    ckpt = tmp_path / "mine.pt"
    torch.save(create_model("resnet8", num_classes=10).state_dict(), ckpt)
    lines = dry_run(capsys, *argv, "--teacher-ckpt", f"resnet8={ckpt}")
    assert len(lines) == 1 and lines[0].startswith(f"  teacher resnet8: imported from {ckpt}, key imported-")


def test_dry_run_names_a_teacher_imported_via_the_store(capsys, tmp_path):
    root = tmp_path / "cifar"
    write_cifar(root, "cifar100", n_train=10, n_test=20, seed=1)
    source = tmp_path / "in" / "resnet8_vanilla" / "ckpt_epoch_240.pth"
    source.parent.mkdir(parents=True)
    torch.save({"model": create_model("resnet8", num_classes=100).state_dict(), "epoch": 240}, source)
    store = tmp_path / "store"
    assert teacher_cli.main(["import", str(tmp_path / "in"), "--data-root", str(root), "--teacher-dir", str(store),
                             "--device", "cpu"]) == 0
    capsys.readouterr()
    lines = dry_run(capsys, "--preset", "cifar100", "--data-root", str(root), "--teacher-dir", str(store),
                    "--pairs", PAIR, "--methods", "kd", "--seeds", "0")
    assert len(lines) == 1 and lines[0].startswith(
        f"  teacher resnet8: imported via the teacher store ({store / 'cifar100' / 'imported' / 'resnet8.pt'}, "
        f"from {source}), key imported-")
