"""The recorder of one run (``kdcore.recorder``), on its own: what a resume rewrites, when a checkpoint
is due, and the order of a run's last writes, checked by listing the files a crash between two of them
leaves (the crash: a monkeypatched write that raises). The end-to-end kill-and-resume tests (test_resume.py,
test_teacher_resume.py, test_distributed.py) check the same paths through real training."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from kdcore import checkpoints, records
from kdcore.recorder import RunCheckpoint, RunRecorder

RID = records.run_id("kd", "resnet8", "resnet8", 0)


class FakeRun:
    """What a recorder reads of a ``StudentRun``: history, epochs, weights, and its checkpoint state."""

    def __init__(self, total_epochs: int = 4, stages: int = 0):
        torch.manual_seed(0)
        self.model, self.method = torch.nn.Linear(3, 2), torch.nn.Linear(2, 1)
        self.total_epochs, self.stages = total_epochs, stages
        self.epochs_done, self.history = 0, []

    def train_epoch(self, top1: float) -> None:
        with torch.no_grad():
            self.model.weight.add_(1.0)
        self.epochs_done += 1
        entry = {"epoch": self.epochs_done - self.stages, "test_top1": top1}
        if self.epochs_done <= self.stages:
            entry = {"epoch": self.epochs_done, "stage": "pre", "test_top1": top1}
        self.history.append(entry)

    def state_dict(self) -> dict:
        return {"epochs_done": self.epochs_done, "history": copy.deepcopy(self.history),
                "model": copy.deepcopy(self.model.state_dict())}

    def load_state_dict(self, state: dict) -> None:
        self.epochs_done, self.history = state["epochs_done"], copy.deepcopy(state["history"])
        self.model.load_state_dict(state["model"])


class ListCurves:
    def __init__(self):
        self.calls = []

    def start(self, hparams, history):
        self.calls.append(("start", hparams, [h["epoch"] for h in history]))

    def epoch(self, entry):
        self.calls.append(("epoch", entry["epoch"]))

    def close(self):
        self.calls.append(("close",))


def recorder(results: Path, every: int = 2, logs: list | None = None, **kw) -> RunRecorder:
    log = (logs.append if logs is not None else (lambda msg: None))
    ckpt = RunCheckpoint(records.record_path(results, RID).with_suffix(".ckpt.pt"), "fp", every, RID, log)
    return RunRecorder(ckpt, results, RID, **kw)


def record() -> records.RunRecord:
    return records.RunRecord(run_id=RID, status="running", method="kd", teacher="resnet8", student="resnet8",
                             pair="resnet8:resnet8", seed=0, config={"fingerprint": "fp"}, started_at="t0",
                             cost=records.Cost(student_params=1))


def files(results: Path) -> list[str]:
    return sorted(p.name for p in (results / "runs").iterdir())


def metrics_lines(results: Path) -> list[dict]:
    return [json.loads(line) for line in records.metrics_path(results, RID).read_text().splitlines()]


def train(rec: RunRecorder, run: FakeRun, gen: torch.Generator, scores) -> None:
    for top1 in scores:
        run.train_epoch(top1)
        torch.rand(3, generator=gen)  # the epoch draws from the data stream
        rec.epoch_end(run, gen)


def complete(rec: RunRecorder, run: FakeRun) -> None:
    rec.record.status = "complete"
    rec.complete(run, len([h for h in run.history if "stage" not in h]))


def test_resume_replays_metrics_and_curves_to_the_checkpoint_history(tmp_path):
    first, run, gen = recorder(tmp_path), FakeRun(total_epochs=5), torch.Generator().manual_seed(1)
    assert first.resume(run) is None and not first.resumed
    first.start(run, record(), ListCurves(), {"seed": 0})
    train(first, run, gen, [10.0, 20.0, 15.0])  # checkpoint after epoch 2; killed after epoch 3
    saved_state = checkpoints.load(first.checkpoint.path)["data_generator"]
    assert [h["epoch"] for h in metrics_lines(tmp_path)] == [1, 2, 3]

    logs: list[str] = []
    again, resumed = recorder(tmp_path, logs=logs), FakeRun(total_epochs=5)
    data_state = again.resume(resumed)
    assert again.resumed and torch.equal(data_state, saved_state)
    assert logs == [f"{RID}: resuming after epoch 2"]
    curves = ListCurves()
    again.start(resumed, record(), curves, {"seed": 0})
    assert metrics_lines(tmp_path) == resumed.history == run.history[:2]  # exactly the checkpoint's history
    assert curves.calls == [("start", {"seed": 0}, [1, 2])]
    assert records.read_record(again.record_path).status == "running"
    assert again.best_weights_path.exists()  # a resumed run keeps its best epoch so far (epoch 2)
    assert torch.load(again.best_weights_path, weights_only=False)["epoch"] == 2


def test_a_run_started_over_drops_the_best_weights_of_an_earlier_attempt(tmp_path):
    first, run = recorder(tmp_path), FakeRun()
    first.start(run, record())
    train(first, run, torch.Generator(), [10.0])  # best weights, no checkpoint yet
    assert first.best_weights_path.exists() and not first.checkpoint.path.exists()
    again, fresh = recorder(tmp_path), FakeRun()
    assert again.resume(fresh) is None
    again.start(fresh, record())
    assert not again.best_weights_path.exists() and not again.metrics_path.exists()  # nothing to replay
    assert records.read_record(again.record_path).status == "running"


def test_another_fingerprint_starts_over(tmp_path):
    first, run = recorder(tmp_path, every=1), FakeRun()
    first.start(run, record())
    train(first, run, torch.Generator(), [10.0])
    logs: list[str] = []
    ckpt = RunCheckpoint(first.checkpoint.path, "other", 1, RID, logs.append)
    other = RunRecorder(ckpt, tmp_path, RID)
    assert other.resume(FakeRun()) is None and not other.resumed
    assert logs == [f"{RID}: checkpoint made with another configuration; starting over"]


def test_checkpoints_every_nth_epoch_never_after_the_last(tmp_path, monkeypatch):
    saved = []
    real = checkpoints.save_run
    monkeypatch.setattr(checkpoints, "save_run", lambda path, run, *a, **k: (saved.append(run.epochs_done),
                                                                            real(path, run, *a, **k)))
    rec, run = recorder(tmp_path, every=2), FakeRun(total_epochs=6)
    rec.start(run, record())
    train(rec, run, torch.Generator(), [1.0] * 6)
    assert saved == [2, 4]
    never = recorder(tmp_path, every=0)
    never.start(FakeRun(), record())
    train(never, FakeRun(), torch.Generator(), [1.0] * 3)
    assert saved == [2, 4]


def test_best_weights_main_stage_only_and_written_before_the_checkpoint(tmp_path, monkeypatch):
    rec, run = recorder(tmp_path, every=1), FakeRun(total_epochs=5, stages=2)
    curves = ListCurves()
    rec.start(run, record(), curves)
    train(rec, run, torch.Generator(), [90.0, 95.0, 10.0])  # two stage epochs (never best, no curves)
    assert torch.load(rec.best_weights_path, weights_only=False)["epoch"] == 1
    assert curves.calls[1:] == [("epoch", 1)]

    def crash(*a, **k):
        raise RuntimeError("killed in the checkpoint write")

    monkeypatch.setattr(checkpoints, "save_run", crash)
    with pytest.raises(RuntimeError):
        train(rec, run, torch.Generator(), [30.0])
    # the new best epoch's weights and its metrics line are on disk before the checkpoint is written
    assert torch.load(rec.best_weights_path, weights_only=False)["epoch"] == 2
    assert [h["epoch"] for h in metrics_lines(tmp_path)] == [1, 2, 1, 2]
    monkeypatch.undo()
    train(rec, run, torch.Generator(), [30.0])  # equal to the best: the first of equals stays best
    assert torch.load(rec.best_weights_path, weights_only=False)["epoch"] == 2


@pytest.mark.parametrize("crash_at", ["weights", "record", "checkpoint", None])
def test_complete_writes_weights_then_record_then_removes_checkpoint(tmp_path, monkeypatch, crash_at):
    rec, run = recorder(tmp_path, every=1), FakeRun(total_epochs=3)
    rec.start(run, record())
    train(rec, run, torch.Generator(), [10.0, 20.0])
    before = files(tmp_path)
    assert f"{RID}.ckpt.pt" in before and f"{RID}.ckpt.pt.prev" in before

    def crash(*a, **k):
        raise RuntimeError("killed")

    if crash_at == "weights":
        real = checkpoints.atomic_torch_save
        monkeypatch.setattr(checkpoints, "atomic_torch_save",
                            lambda obj, path, *a, **k: crash() if Path(path).name.endswith(".student.pt")
                            else real(obj, path, *a, **k))
    elif crash_at == "record":
        monkeypatch.setattr(records, "write_record", crash)
    elif crash_at == "checkpoint":
        monkeypatch.setattr(checkpoints, "remove", crash)
    run.train_epoch(15.0)
    rec.epoch_end(run, torch.Generator())  # the last epoch: no checkpoint
    if crash_at is None:
        complete(rec, run)
    else:
        with pytest.raises(RuntimeError):
            complete(rec, run)
    on_disk = records.read_record(rec.record_path)
    weights = f"{RID}.student.pt" in files(tmp_path)
    checkpoint = f"{RID}.ckpt.pt" in files(tmp_path)
    if crash_at == "weights":  # nothing says complete, the checkpoint is still there to resume from
        assert (on_disk.status, weights, checkpoint) == ("running", False, True)
    elif crash_at == "record":  # the final weights, the record still "running", the checkpoint kept
        assert (on_disk.status, weights, checkpoint) == ("running", True, True)
    elif crash_at == "checkpoint":  # complete on disk; the checkpoint goes with the next run's cleanup
        assert (on_disk.status, weights, checkpoint) == ("complete", True, True)
    else:
        assert (on_disk.status, weights, checkpoint) == ("complete", True, False)
        assert (on_disk.weights, on_disk.weights_best) == (f"{RID}.student.pt", f"{RID}.best.pt")
        assert files(tmp_path) == sorted([f"{RID}.json", f"{RID}.metrics.jsonl", f"{RID}.student.pt",
                                          f"{RID}.best.pt"])
        assert torch.load(rec.weights_path, weights_only=False)["epoch"] == 3


def test_without_a_results_folder_only_the_checkpoint_is_kept(tmp_path):
    """A teacher's (and a DDP rank's other than 0): checkpoint, resume, remove; no record, metrics or weights."""
    path = tmp_path / "teacher.ckpt.pt"
    rec, run = RunRecorder(RunCheckpoint(path, "key", 1, "teacher resnet8", lambda m: None)), FakeRun(3)
    assert rec.resume(run) is None
    rec.start(run, None)
    train(rec, run, torch.Generator(), [10.0, 20.0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["teacher.ckpt.pt", "teacher.ckpt.pt.prev"]
    again = FakeRun(3)
    assert rec.resume(again) is not None and again.epochs_done == 2
    rec.remove_checkpoint()
    assert list(tmp_path.iterdir()) == []
