"""Durability: a run killed with SIGKILL and resumed ends bitwise equal to an uninterrupted one;
unreadable records and checkpoints are not trusted; two runners never train the same run."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from kdcore import records
from benchmarks.locks import FileLock
from benchmarks.run import main

ROOT = Path(__file__).resolve().parents[1]
METHODS = "kd,crd"
ARGS = ["--methods", METHODS, "--pairs", "resnet8:resnet8", "--seeds", "0", "--epochs", "4",
        "--set", "teacher_train.epochs=1", "--set", "crd.nce_k=64", "--quiet", "--no-report"]
RUN_IDS = [f"{m}__resnet8-resnet8__s0" for m in METHODS.split(",")]


def cli(results: Path, grid: str, *extra: str, kill_in_write: int | None = None) -> list[str]:
    # kill_in_write=N: the process dies (SIGKILL) halfway through its N-th checkpoint write (tests/kill_hook.py)
    entry = ["-m"] if kill_in_write is None else [str(ROOT / "tests" / "kill_hook.py"), str(kill_in_write)]
    return [sys.executable, *entry, "benchmarks.run", "--results", str(results), "--grid", grid, *ARGS, *extra]


def spawn(results: Path, grid: str, *extra: str, kill_in_write: int | None = None) -> subprocess.Popen:
    # same thread count as this process: CPU results are bitwise reproducible for a given thread count
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(torch.get_num_threads())}
    return subprocess.Popen(cli(results, grid, *extra, kill_in_write=kill_in_write), cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def final_state(grid_dir: Path, rid: str):
    weights = torch.load(grid_dir / "runs" / f"{rid}.student.pt", weights_only=False)
    rec = records.read_json(records.record_path(grid_dir, rid))
    metrics = [{k: v for k, v in h.items() if "time" not in k and k != "images_per_s"} for h in rec["history"]]
    return weights, metrics


def assert_same_as_reference(reference: Path, grid_dir: Path) -> None:
    for rid in RUN_IDS:
        rec = records.read_json(records.record_path(grid_dir, rid))
        assert rec["status"] == "complete", rid
        (w_ref, m_ref), (w, m) = final_state(reference, rid), final_state(grid_dir, rid)
        assert m == m_ref, rid
        for part in ("student", "method"):  # student weights and method state (CRD's memory banks)
            assert w[part].keys() == w_ref[part].keys()
            for k in w[part]:
                assert torch.equal(w[part][k], w_ref[part][k]), f"{rid} {part}.{k}"
        # the per-epoch log holds each epoch exactly once after a resume
        lines = (grid_dir / "runs" / f"{rid}.metrics.jsonl").read_text().splitlines()
        assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3, 4]
        assert not (grid_dir / "runs" / f"{rid}.ckpt.pt").exists()
        # so do the TensorBoard curves, with the same values, and the best epoch's weights are the reference's
        steps = event_steps(grid_dir, rid)
        assert steps["test/top1"] == [(e, pytest.approx(h["test_top1"])) for e, h in enumerate(m, 1)], rid
        assert {tag: [s for s, _ in v] for tag, v in steps.items() if tag.startswith("loss")} == \
            {tag: [1, 2, 3, 4] for tag in steps if tag.startswith("loss")}, rid
        best, best_ref = (torch.load(g / "runs" / f"{rid}.best.pt", weights_only=True) for g in (grid_dir, reference))
        assert best["epoch"] == best_ref["epoch"]
        assert all(torch.equal(best["student"][k], best_ref["student"][k]) for k in best_ref["student"]), rid


def event_steps(grid_dir: Path, rid: str) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag of a run's TensorBoard files, read back with tensorboard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(grid_dir / "tensorboard" / rid))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run; it also trains the teacher every other test reuses from the cache."""
    results = tmp_path_factory.mktemp("results")
    assert main(["--results", str(results), "--grid", "ref", *ARGS]) == 0
    return results, results / "ref"


def wait_for_epochs(path: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if path.exists() and len(path.read_text().splitlines()) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"runner ended early: {proc.stderr.read()}")
        time.sleep(0.02)
    raise AssertionError("timed out waiting for epochs")


def test_killed_during_a_checkpoint_write_resumes_bitwise(reference):
    results, ref = reference
    # the 4th checkpoint write of the process is crd's after epoch 2: kd is then at epoch 2, crd at 1
    proc = spawn(results, "killwrite", kill_in_write=4)
    proc.wait(timeout=300)
    assert proc.returncode == -signal.SIGKILL
    runs = results / "killwrite" / "runs"
    assert list(runs.glob(".*.tmp")), "the kill should leave a half-written temp file"
    assert records.read_json(records.record_path(results / "killwrite", RUN_IDS[1]))["status"] == "running"
    assert main(["--results", str(results), "--grid", "killwrite", *ARGS]) == 0
    assert_same_as_reference(ref, results / "killwrite")
    assert not list(runs.glob(".*.tmp"))


@pytest.mark.parametrize("after_epochs", [1, 3])
def test_killed_at_an_epoch_boundary_resumes_bitwise(reference, after_epochs):
    results, ref = reference
    grid = f"kill{after_epochs}"
    proc = spawn(results, grid)
    wait_for_epochs(results / grid / "runs" / f"{RUN_IDS[1]}.metrics.jsonl", after_epochs, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert main(["--results", str(results), "--grid", grid, *ARGS]) == 0
    assert_same_as_reference(ref, results / grid)


def test_killed_at_an_arbitrary_moment_resumes_bitwise(reference):
    results, ref = reference
    proc = spawn(results, "killany")
    time.sleep(4.5)  # somewhere in start-up or training, wherever it lands
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert main(["--results", str(results), "--grid", "killany", *ARGS]) == 0
    assert_same_as_reference(ref, results / "killany")


def test_unreadable_checkpoint_falls_back_to_the_previous_one(reference, capsys):
    results, ref = reference
    proc = spawn(results, "badckpt")
    wait_for_epochs(results / "badckpt" / "runs" / f"{RUN_IDS[1]}.metrics.jsonl", 3, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    ckpt = results / "badckpt" / "runs" / f"{RUN_IDS[0]}.ckpt.pt"
    assert ckpt.with_name(ckpt.name + ".prev").exists()
    ckpt.write_bytes(ckpt.read_bytes()[:1000])  # truncated: must not be trusted
    assert main(["--results", str(results), "--grid", "badckpt", *ARGS]) == 0
    said = [line for line in capsys.readouterr().err.splitlines() if "unreadable" in line]
    assert said == [f"checkpoint {ckpt} is unreadable: expected a PyTorch checkpoint saved by kdbench, found a zip "
                    f"archive cut short (1000 bytes, no end-of-archive record): truncated; ignoring it: trying "
                    f"{ckpt.name}.prev instead"]
    assert_same_as_reference(ref, results / "badckpt")


def test_truncated_record_is_redone_and_nothing_else_is_touched(reference, capsys):
    results, ref = reference
    assert main(["--results", str(results), "--grid", "badrec", *ARGS]) == 0
    runs = results / "badrec" / "runs"
    bad = records.record_path(results / "badrec", RUN_IDS[0])
    bad.write_text(bad.read_text()[:100])
    others = {p.name: p.read_bytes() for p in runs.iterdir() if p.is_file() and RUN_IDS[0] not in p.name}
    assert main(["--results", str(results), "--grid", "badrec", *ARGS]) == 0
    said = [line for line in capsys.readouterr().err.splitlines() if "unreadable JSON" in line]
    assert len(said) == 1 and said[0].endswith("; redoing the run from its last good checkpoint"), said  # once
    assert records.read_json(bad)["status"] == "complete"
    assert others == {p.name: p.read_bytes() for p in runs.iterdir() if p.is_file() and RUN_IDS[0] not in p.name}
    assert_same_as_reference(ref, results / "badrec")


def test_two_runners_never_train_the_same_run(reference, tmp_path):
    results, _ = reference
    # three short cohorts to share out, and a teacher neither has yet: both race for it
    extra = ("--seeds", "0,1,2", "--epochs", "2", "--teacher-dir", str(tmp_path / "teachers"))
    procs = [spawn(results, "two", *extra) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    teacher_lines = [line for _, err in outs for line in err.splitlines() if line.startswith("teacher resnet8:")]
    assert sum("training" in line for line in teacher_lines) == 1  # one trains it ...
    assert sum("cached" in line for line in teacher_lines) <= 1  # ... the other waits and reuses it
    # each run started exactly once, by one of the two: per seed, the cohorts the two started (whole, or split
    # run by run between them) hold as many runs as there are methods
    started = {0: 0, 1: 0, 2: 0}
    for _, err in outs:
        for seed, count in re.findall(r"^cohort resnet8:resnet8 s(\d): (\d+) runs?\b", err, re.MULTILINE):
            started[int(seed)] += int(count)
    assert started == dict.fromkeys((0, 1, 2), len(METHODS.split(","))), outs
    expected = {f"{m}__resnet8-resnet8__s{s}" for m in METHODS.split(",") for s in (0, 1, 2)}
    for rid in expected:
        assert records.read_json(records.record_path(results / "two", rid))["status"] == "complete"


def test_a_lock_left_by_a_killed_process_is_recovered(reference):
    results, ref = reference
    lock_path = records.record_path(results / "stale", RUN_IDS[0]).with_suffix(".lock")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, %r); from benchmarks.locks import FileLock; "
        "assert FileLock(%r).acquire(); print('held', flush=True); time.sleep(600)") % (str(ROOT), str(lock_path))],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    assert not FileLock(lock_path).acquire()  # held by a live process: refused
    holder.kill()
    holder.wait()
    assert main(["--results", str(results), "--grid", "stale", *ARGS]) == 0
    assert_same_as_reference(ref, results / "stale")
