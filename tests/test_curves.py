"""TensorBoard curves of every run, and the progress display off a terminal."""
from __future__ import annotations

import io

import pytest

from kdcore import records
from benchmarks.progress import LineProgress
from benchmarks.run import main
from conftest import THREADS
from test_resume import event_steps

TINY = ["--pairs", "resnet8:resnet8", "--methods", "vanilla,kd", "--seeds", "0", "--epochs", "2",
        "--set", "teacher_train.epochs=1", "--no-report"]


def test_event_files_hold_every_term_and_metric_per_epoch(capsys, tmp_path):
    assert main(["--results", str(tmp_path), "--grid", "g", "--quiet", *TINY]) == 0
    rec = records.read_json(records.record_path(tmp_path / "g", "kd__resnet8-resnet8__s0"))
    steps = event_steps(tmp_path / "g", "kd__resnet8-resnet8__s0")
    assert set(steps) == {"loss/ce", "loss/kd", "loss_weighted/ce", "loss_weighted/kd", "loss/total", "lr",
                          "train/top1", "test/top1", "test/top5", "time/epoch_s", "time/eval_s", "images_per_s",
                          "test/ece", "fidelity/agreement", "fidelity/kl_teacher"}
    for tag, key in [("test/top1", "test_top1"), ("lr", "lr"), ("loss/total", "loss"), ("train/top1", "train_top1"),
                     ("fidelity/agreement", "test_agreement"), ("fidelity/kl_teacher", "test_kl_teacher")]:
        assert steps[tag] == [(h["epoch"], pytest.approx(h[key])) for h in rec["history"]], tag
    assert steps["loss_weighted/kd"] == [(h["epoch"], pytest.approx(h["weighted_losses"]["kd"])) for h in rec["history"]]
    assert set(event_steps(tmp_path / "g", "vanilla__resnet8-resnet8__s0")) >= {"loss/ce", "test/top1"}
    # the resolved hyperparameters, as TensorBoard's hparams plugin reads them
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(str(tmp_path / "g" / "tensorboard" / "kd__resnet8-resnet8__s0"))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    hp = {k: (v.number_value if v.HasField("number_value") else v.string_value) for k, v in start.hparams.items()}
    assert hp["kd.T"] == 4.0 and hp["kd.alpha"] == 0.9 and hp["train.lr"] == rec["config"]["train"]["lr"]
    assert hp["method"] == "kd" and hp["pair"] == "resnet8:resnet8" and hp["seed"] == 0


def test_line_progress_prints_whole_lines_at_a_modest_rate():
    now = [0.0]
    out = io.StringIO()
    bar = LineProgress(10, "student epoch", out, interval=30.0, clock=lambda: now[0])
    for _ in range(4):  # 4 updates within 30 s: nothing printed yet
        now[0] += 5.0
        bar.update(1)
    assert out.getvalue() == ""
    now[0] += 10.0  # 30 s elapsed at 5 of 10
    bar.set_postfix_str("best kd 90.0%")
    bar.update(1)
    assert out.getvalue() == "progress: 5/10 student epochs (50%), 0:30 elapsed, about 0:30 left; best kd 90.0%\n"
    bar.write("a log line")
    now[0] += 30.0
    bar.update(5)  # printed at the interval; close() does not repeat the final count
    bar.close()
    assert out.getvalue().splitlines()[1:] == ["a log line",
                                               "progress: 10/10 student epochs (100%), 1:00 elapsed; best kd 90.0%"]


def test_cli_off_a_terminal_prints_plain_lines_and_a_plan(capsys, tmp_path):
    assert main(["--results", str(tmp_path), *TINY]) == 0  # progress on (no --quiet); pytest's stderr is no TTY
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    plan = next(line for line in lines if line.startswith("plan: "))
    assert plan.startswith(f"plan: 2 runs as 1 cohort, 4 student epochs on cpu, threads: {THREADS} (OMP_NUM_THREADS); "
                           "teacher resnet8 to be trained by kdbench (1 epoch) into ")
    assert any(line.startswith("estimate: about ") for line in lines)
    assert lines[-2].startswith("progress: 4/4 student epochs (100%)")  # then "done in ..."
