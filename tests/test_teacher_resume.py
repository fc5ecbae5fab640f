"""A teacher killed while the suite trains it resumes from its last checkpointed epoch, and ends bitwise
equal (weights, BN buffers, recorded accuracy) to an uninterrupted one (CPU, same thread count); an
unreadable or foreign teacher checkpoint is never trusted; the teacher's lock keeps one trainer at a time."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from kdcore import records
from benchmarks.run import main

ROOT = Path(__file__).resolve().parents[1]
TEACHER_EPOCHS = 4
ARGS = ["--grid", "g", "--methods", "vanilla", "--pairs", "resnet8:resnet8", "--seeds", "0", "--epochs", "1",
        "--set", f"teacher_train.epochs={TEACHER_EPOCHS}", "--quiet", "--no-report"]
RUN_ID = "vanilla__resnet8-resnet8__s0"


def spawn(results: Path, *extra: str, kill_in_write: int | None = None) -> subprocess.Popen:
    # kill_in_write=N: the process dies (SIGKILL) halfway through its N-th checkpoint write (tests/kill_hook.py)
    entry = ["-m"] if kill_in_write is None else [str(ROOT / "tests" / "kill_hook.py"), str(kill_in_write)]
    # same thread count as this process: CPU results are bitwise reproducible for a given thread count
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(torch.get_num_threads())}
    return subprocess.Popen([sys.executable, *entry, "benchmarks.run", "--results", str(results), *ARGS, *extra],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def teacher_dir(results: Path) -> Path:
    return results / "teachers" / "digits"


def teacher_file(results: Path) -> Path:
    found = [p for p in teacher_dir(results).glob("resnet8__s0__*.pt") if not p.name.endswith(".ckpt.pt")]
    assert len(found) == 1, found
    return found[0]


def ckpt_of(results: Path, reference: Path) -> Path:
    """The teacher's checkpoint in ``results``: named after the reference's teacher file, key included."""
    return teacher_dir(results) / (teacher_file(reference).stem + ".ckpt.pt")


def prev(path: Path) -> Path:
    return path.with_name(path.name + ".prev")


def assert_teacher_equal(reference: Path, results: Path) -> None:
    ref, got = teacher_file(reference), teacher_file(results)
    assert got.name == ref.name
    w_ref, w = torch.load(ref, weights_only=True), torch.load(got, weights_only=True)
    assert list(w) == list(w_ref)
    assert any(k.endswith("running_var") for k in w)  # BN buffers are compared too
    for k in w_ref:
        assert torch.equal(w[k], w_ref[k]), k
    m_ref, m = (json.loads(p.with_suffix(".json").read_text()) for p in (ref, got))
    for k in ("key", "epochs", "top1", "top5", "top1_best"):
        assert m[k] == m_ref[k], k
    # the checkpoints (and the temp files a kill left) are gone once the teacher is written
    # (and its lock, deleted by the process that held it)
    assert sorted(p.name for p in teacher_dir(results).iterdir()) == sorted([got.name, got.with_suffix(".json").name])
    assert records.read_json(records.record_path(results / "g", RUN_ID))["status"] == "complete"


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    results = tmp_path_factory.mktemp("reference")
    assert main(["--results", str(results), *ARGS]) == 0
    return results


@pytest.fixture(scope="module")
def killed(tmp_path_factory, reference) -> Path:
    """A runner killed halfway through the teacher's 3rd checkpoint write (after epoch 3 of 4): the checkpoint
    after epoch 2 and its .prev (epoch 1) are whole, a half-written temp file lies beside them."""
    results = tmp_path_factory.mktemp("killed")
    proc = spawn(results, kill_in_write=3)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, err
    ckpt = ckpt_of(results, reference)
    assert torch.load(ckpt, weights_only=False)["run"]["epochs_done"] == 2
    assert torch.load(prev(ckpt), weights_only=False)["run"]["epochs_done"] == 1
    assert list(teacher_dir(results).glob(f".{ckpt.name}.*.tmp")), "the kill should leave a half-written temp file"
    assert not list(teacher_dir(results).glob("*.json"))  # no finished teacher
    return results


def copy_of(killed: Path, tmp_path: Path) -> Path:
    out = tmp_path / "results"
    shutil.copytree(killed, out)
    return out


def test_killed_teacher_resumes_after_its_last_epoch_bitwise(reference, killed, tmp_path, capsys):
    results = copy_of(killed, tmp_path)
    assert main(["--results", str(results), *ARGS]) == 0
    err = capsys.readouterr().err
    assert "teacher resnet8: resuming after epoch 2" in err
    assert_teacher_equal(reference, results)


def test_truncated_teacher_checkpoint_falls_back_to_the_previous_one(reference, killed, tmp_path, capsys):
    results = copy_of(killed, tmp_path)
    ckpt = ckpt_of(results, reference)
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    assert main(["--results", str(results), *ARGS]) == 0
    err = capsys.readouterr().err
    assert (f"checkpoint {ckpt} is unreadable: expected a PyTorch checkpoint saved by kdbench, found a zip archive "
            f"cut short (1000 bytes, no end-of-archive record): truncated; ignoring it: trying {ckpt.name}.prev "
            f"instead") in err
    assert "teacher resnet8: resuming after epoch 1" in err
    assert_teacher_equal(reference, results)


def test_no_readable_teacher_checkpoint_starts_over(reference, killed, tmp_path, capsys):
    results = copy_of(killed, tmp_path)
    ckpt = ckpt_of(results, reference)
    ckpt.write_bytes(b"")
    prev(ckpt).write_bytes(prev(ckpt).read_bytes()[:1000])
    assert main(["--results", str(results), *ARGS]) == 0
    err = capsys.readouterr().err
    said = [line for line in err.splitlines() if "unreadable" in line]
    assert said == [f"checkpoint {ckpt} is unreadable: expected a PyTorch checkpoint saved by kdbench, found an empty "
                    f"file (0 bytes); ignoring it: trying {ckpt.name}.prev instead",
                    f"checkpoint {prev(ckpt)} is unreadable: expected a PyTorch checkpoint saved by kdbench, found a "
                    f"zip archive cut short (1000 bytes, no end-of-archive record): truncated; ignoring it: training "
                    f"starts over (no other readable checkpoint)"]
    assert "resuming" not in err
    assert_teacher_equal(reference, results)


def test_a_checkpoint_made_under_another_key_is_never_used(reference, killed, tmp_path, capsys):
    results = copy_of(killed, tmp_path)
    ckpt = ckpt_of(results, reference)
    assert ckpt.name.startswith(teacher_file(reference).stem)  # the key is in its name ...
    for path in (ckpt, prev(ckpt)):  # ... and stored in it, and checked
        state = torch.load(path, weights_only=False)
        assert state["fingerprint"] in ckpt.name
        state["fingerprint"] = "0123456789ab"
        torch.save(state, path)
    assert main(["--results", str(results), *ARGS]) == 0
    err = capsys.readouterr().err
    assert "teacher resnet8: checkpoint made with another configuration; starting over" in err
    assert "resuming" not in err
    assert_teacher_equal(reference, results)


def test_checkpoint_every_and_a_kill_while_writing_the_teacher_file(reference, tmp_path, capsys):
    results = tmp_path / "results"
    # --checkpoint-every 2: the teacher checkpoints after epoch 2 only (never after its last); the process's
    # 2nd write is the finished teacher file's, killed halfway
    proc = spawn(results, "--checkpoint-every", "2", kill_in_write=2)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, err
    ckpt = ckpt_of(results, reference)
    assert ckpt.exists() and not prev(ckpt).exists()
    assert list(teacher_dir(results).glob(f".{teacher_file(reference).name}.*.tmp"))
    assert main(["--results", str(results), "--checkpoint-every", "2", *ARGS]) == 0
    assert "teacher resnet8: resuming after epoch 2" in capsys.readouterr().err
    assert_teacher_equal(reference, results)


def test_a_teacher_being_trained_is_not_trained_by_a_second_runner(reference, tmp_path):
    results = tmp_path / "results"
    lock = teacher_dir(results) / (teacher_file(reference).name + ".lock")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, %r); from benchmarks.locks import FileLock; "
        "assert FileLock(%r).acquire(); print('held', flush=True); time.sleep(600)") % (str(ROOT), str(lock))],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        proc = spawn(results)
        while not (line := proc.stderr.readline()).startswith("plan:"):
            assert line, "runner ended before its plan"
        time.sleep(1.5)  # it now waits for the teacher's lock: no training, no checkpoint
        assert proc.poll() is None
        assert not list(teacher_dir(results).glob("*.ckpt.pt*"))
    finally:
        holder.kill()
        holder.wait()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert_teacher_equal(reference, results)
