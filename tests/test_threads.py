"""Issue 31: a process's CPU threads sized from the CPUs it may use and the load beside it (kdcore/cpus.py).

The cgroup files and /proc/stat samples are written here by hand; the grid test feeds the runner a load that
changes between its two cohorts and reads the thread counts back from the records.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kdcore import cpus, records
from kdcore.cpus import (LoadFollower, ThreadChoice, busy_cpus, cgroup_cpu_limit, choose_threads, cpu_times,
                             usable_cpus)
from benchmarks.run import main

from conftest import THREADS


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_quota_takes_the_tightest_level(tmp_path):
    write(tmp_path / "self", "0::/user.slice/job\n")
    write(tmp_path / "cg" / "user.slice" / "job" / "cpu.max", "max 100000\n")
    write(tmp_path / "cg" / "user.slice" / "cpu.max", "150000 100000\n")  # the parent caps its child: 1.5 CPUs
    write(tmp_path / "cg" / "cpu.max", "400000 100000\n")
    assert cgroup_cpu_limit(tmp_path / "cg", tmp_path / "self") == 1.5
    assert usable_cpus([0, 1, 2, 3], 1.5) == 1  # rounded down: a second thread would wait for quota
    assert usable_cpus([0, 1, 2, 3], 0.5) == 1  # never 0
    assert usable_cpus([0, 1, 2], None) == 3


def test_cgroup_v1_quota_and_no_quota(tmp_path):
    write(tmp_path / "self", "5:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n")
    folder = tmp_path / "cg" / "cpu,cpuacct" / "docker" / "abc"
    write(folder / "cpu.cfs_quota_us", "200000\n")
    write(folder / "cpu.cfs_period_us", "100000\n")
    assert cgroup_cpu_limit(tmp_path / "cg", tmp_path / "self") == 2.0
    write(folder / "cpu.cfs_quota_us", "-1\n")  # v1's "no quota"
    assert cgroup_cpu_limit(tmp_path / "cg", tmp_path / "self") is None
    assert cgroup_cpu_limit(tmp_path / "cg", tmp_path / "missing") is None


def test_cpu_times_and_busy_share_by_hand(tmp_path):
    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal: cpu0 busy 10+0+5+0+0+5=20 of 20+70+10=100
    write(stat, "cpu  30 0 10 140 20 0 0 0 0 0\ncpu0 10 0 5 70 10 0 5 0 0 0\ncpu1 20 0 5 70 10 0 0 0 0 0\n")
    assert cpu_times(stat) == {0: (20, 100), 1: (25, 105)}
    samples = iter([{0: (20, 100), 1: (25, 105), 2: (0, 10)},
                    {0: (120, 200), 1: (50, 205), 2: (0, 110)}])  # cpu0 100/100 busy, cpu1 25/100, cpu2 idle
    assert busy_cpus([0, 1, 2], sample=lambda: next(samples), sleep=lambda s: None) == pytest.approx(1.25)
    samples = iter([{0: (20, 100)}, {0: (120, 200)}])
    assert busy_cpus([0, 1], sample=lambda: next(samples), sleep=lambda s: None) is None  # cpu1 unreadable


@pytest.mark.parametrize("busy, threads", [(0.0, 2), (0.3, 2), (1.0, 1), (1.6, 1), (2.0, 1), (None, 2)])
def test_auto_leaves_out_the_cpus_other_work_keeps_busy(busy, threads):
    choice = choose_threads(environ={}, cpus=[0, 1], usable=2, busy=lambda c: busy)
    assert (choice.threads, choice.source, choice.busy) == (threads, "auto", busy)


def test_workers_share_the_usable_cpus_and_flags_win():
    assert choose_threads(workers=2, environ={}, cpus=[0, 1, 2, 3], usable=4, busy=lambda c: 0.0).threads == 2
    assert choose_threads(workers=3, environ={}, cpus=[0, 1], usable=2, busy=lambda c: 0.0).threads == 1
    never = lambda c: pytest.fail("a fixed count samples no load")  # noqa: E731
    assert choose_threads(3, environ={"OMP_NUM_THREADS": "1"}, usable=2, busy=never) == \
        ThreadChoice(3, "--threads", 2, 2)
    assert choose_threads(None, environ={"OMP_NUM_THREADS": "1"}, usable=2, busy=never) == \
        ThreadChoice(1, "OMP_NUM_THREADS", 2, 2)
    # an unusable OMP_NUM_THREADS (OpenMP's "4,2" nesting syntax, empty) leaves the choice to auto
    assert choose_threads(None, environ={"OMP_NUM_THREADS": "4,2"}, cpus=[0], usable=1,
                          busy=lambda c: 0.0).source == "auto"


def test_describe_and_record():
    auto = ThreadChoice(1, "auto", 2, 2, 1.04)
    assert auto.describe() == "threads: 1 (auto: 2 usable CPUs, 1.0 busy with other work; --threads N fixes it)"
    assert ThreadChoice(2, "auto", 4, 2, None).describe() == \
        "threads: 2 (auto: 4 usable CPUs, 2 for this worker; --threads N fixes it)"
    assert ThreadChoice(1, "auto", 1, 1, 0.0).describe() == \
        "threads: 1 (auto: 1 usable CPU, 0.0 busy with other work; --threads N fixes it)"
    assert ThreadChoice(3, "--threads", 2, 2).describe() == "threads: 3 (--threads)"
    assert auto.record() == {"threads": 1, "threads_source": "auto", "usable_cpus": 2, "busy_cpus": 1.04}


def test_bad_threads_flag_is_one_line(capsys, tmp_path):
    assert main(["--threads", "0", "--results", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err == "error: --threads must be >= 1 (CPU threads per process), got 0\n"
    assert not (tmp_path / "r").exists()


TINY = ["--pairs", "resnet8:resnet8", "--methods", "vanilla", "--epochs", "1", "--set", "teacher_train.epochs=1",
        "--no-report"]


def test_others_busy_by_hand_and_a_look_changes_the_count():
    samples = iter([{0: (100, 1000), 1: (100, 1000)}, {0: (180, 1100), 1: (170, 1100)},
                    {0: (200, 1200), 1: (190, 1200)}])
    own = iter([50, 100, 140])
    said = []
    follower = LoadFollower(ThreadChoice(2, "auto", 2, 2, 0.0), [0, 1], said.append, lambda: next(samples),
                            lambda: next(own))
    try:
        # busy ticks 80 + 70 = 150, this process's own 50: others kept 100 ticks of one CPU's 100 busy
        assert follower.look() == ThreadChoice(1, "auto", 2, 2, 1.0) and torch.get_num_threads() == 1
        assert said == ["threads: 1 (auto: 2 usable CPUs, 1.0 busy with other work; --threads N fixes it), was 2"]
        # then 20 + 20 busy, 40 of them this process's own: the other job ended, both CPUs are this one's again
        assert follower.look() == ThreadChoice(2, "auto", 2, 2, 0.0) and torch.get_num_threads() == 2
        assert len(said) == 2 and said[1].endswith(", was 1")
    finally:
        torch.set_num_threads(THREADS)


def test_a_look_too_soon_after_the_last_keeps_the_count_and_measures_the_longer_interval():
    """The grid looks as a cohort starts and the cohort's first epoch looks again at once: over a few ticks one tick
    more or less is a CPU's worth of load, so a look over less than MIN_LOOK_TICKS waits for a longer interval."""
    first = {0: (0, 0), 1: (0, 0)}
    samples = iter([first, {0: (3, 4), 1: (3, 4)}, {0: (53, 104), 1: (53, 104)}])
    own = iter([0, 0, 100])
    said = []
    follower = LoadFollower(ThreadChoice(2, "auto", 2, 2, 0.0), [0, 1], said.append, lambda: next(samples),
                            lambda: next(own))
    try:
        # 4 ticks passed, 3 of each CPU's busy with another process: "1.5 CPUs busy" would drop to 1 thread
        assert follower.look() == ThreadChoice(2, "auto", 2, 2, 0.0) and said == []
        assert follower.last == (first, 0)  # kept: the next look measures from it
        # 104 ticks since the first sample, 106 busy less this process's 100: 0.06 CPU busy
        assert follower.others_busy() == pytest.approx(6 / 104)
    finally:
        torch.set_num_threads(THREADS)


class FakeMachine:
    """/proc/stat and /proc/self/stat of a 2-CPU machine whose other job keeps ``others`` CPUs busy, 100 ticks of
    each CPU passing between two looks; this process's own time is left out of both (it adds as much to each)."""

    def __init__(self, schedule):
        self.schedule, self.looks, self.busy, self.total = schedule, 0, 0.0, 0

    def cpu_times(self):
        others = self.schedule(self.looks)
        self.looks += 1
        self.busy += 50 * others
        self.total += 100
        return {0: (round(self.busy), self.total), 1: (round(self.busy), self.total)}


def test_grid_follows_the_load_epoch_by_epoch(tmp_path, monkeypatch, capsys):
    # the machine is idle when the grid starts; a job then keeps one CPU busy for a while and ends
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(cpus, "_follower", None)  # left as found, whatever the grid leaves
    monkeypatch.setattr(cpus, "affinity_cpus", lambda: [0, 1])
    monkeypatch.setattr(cpus, "cgroup_cpu_limit", lambda: None)
    monkeypatch.setattr(cpus, "busy_cpus", lambda c: 0.0)
    machine = FakeMachine(lambda look: 1.0 if 1 <= look < 4 else 0.0)
    monkeypatch.setattr(cpus, "cpu_times", machine.cpu_times)
    monkeypatch.setattr(cpus, "own_ticks", lambda: 0)
    try:
        assert main(["--results", str(tmp_path), "--grid", "g", "--seeds", "0,1", "--epochs", "3", "--pairs",
                     "resnet8:resnet8", "--methods", "vanilla", "--set", "teacher_train.epochs=1", "--no-report"]) == 0
    finally:
        torch.set_num_threads(THREADS)
    err = capsys.readouterr().err
    assert "plan: 2 runs as 2 cohorts, 6 student epochs on cpu, threads: 2 (auto: 2 usable CPUs, 0.0 busy " \
           "with other work; --threads N fixes it)" in err
    changes = [line for line in err.splitlines() if line.startswith("threads: ")]
    assert changes == ["threads: 1 (auto: 2 usable CPUs, 1.0 busy with other work; --threads N fixes it), was 2",
                       "threads: 2 (auto: 2 usable CPUs, 0.0 busy with other work; --threads N fixes it), was 1"]
    # looks: the follower's start (0), cohort s0 (1), the teacher's epoch (2), s0's 3 epochs (3-5), cohort s1 (6), ...
    recs = [records.read_json(records.record_path(tmp_path / "g", records.run_id("vanilla", "resnet8", "resnet8", s)))
            for s in (0, 1)]
    assert [h["threads"] for h in recs[0]["history"]] == [1, 2, 2]
    assert [h["threads"] for h in recs[1]["history"]] == [2, 2, 2]
    assert (recs[0]["env"]["threads"], recs[0]["env"]["busy_cpus"]) == (1, 1.0)  # as its cohort started
    assert recs[1]["env"]["threads"] == 2
    assert cpus._follower is None  # the grid's end stops following


def test_threads_flag_is_used_and_recorded(tmp_path, capsys):
    try:
        assert main(["--results", str(tmp_path), "--grid", "g", "--seeds", "0", "--threads", "1", *TINY]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(THREADS)
    assert "on cpu, threads: 1 (--threads);" in capsys.readouterr().err
    env = records.read_json(records.record_path(tmp_path / "g", records.run_id("vanilla", "resnet8", "resnet8", 0)))
    assert (env["env"]["threads"], env["env"]["threads_source"]) == (1, "--threads")
