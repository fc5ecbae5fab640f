"""The bookkeeping of one training run, in one place: its checkpoint, record, metrics, curves and weights.

``RunCheckpoint``: a run's checkpoint file (``checkpoints.save_run`` format, one previous generation kept):
resume from it, save it at the end of every ``every``-th epoch (never after the last one), remove it. A
suite-trained teacher (``teachers.py``) has this part only; a DDP rank (``distributed.py``) has its own
file and an all-ranks-agree resume (a subclass there).

``RunRecorder``: everything a student run leaves in its results folder, written in an order that a kill
at any instant leaves consistent:

* ``start``: the record ("running"), ``metrics.jsonl`` rewritten from the history the run holds (its
  checkpoint's on a resume, nothing on a fresh start), the curves restarted from the same history, and a
  best-epoch file of an earlier attempt removed when the run starts over;
* ``epoch_end``: one metrics line, the epoch's curves, the best epoch's weights (written before the
  checkpoint, so a resume never lacks the best so far), then the checkpoint when it is due;
* ``complete``: the final weights, then the record that says "complete", then the checkpoint it
  supersedes;
* ``write``: a record that ends the run otherwise (failed, not applicable).

Without a results folder a recorder records nothing and only checkpoints (a DDP rank other
than 0).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch

from kdcore import checkpoints, records
from kdcore.recipe import evaluated

if TYPE_CHECKING:  # the caller opens the curves (grid.py); nothing here needs TensorBoard
    from kdcore.curves import Curves


class RunCheckpoint:
    """One run's checkpoint at ``path``, made under ``fingerprint``; ``extra``: more fields saved with it
    (a DDP rank's ``world``). ``every``: checkpoint after every ``every``-th epoch (0: never)."""

    def __init__(self, path: Path, fingerprint: str, every: int, name: str,
                 log: Callable[[str], None] = print, **extra: Any):
        self.path, self.fingerprint, self.every, self.name, self.log = Path(path), fingerprint, every, name, log
        self.extra = extra

    def resume(self, run: Any) -> torch.Tensor | None:
        """Restore ``run``; the data-stream generator state to continue from, or None to start over."""
        return checkpoints.resume_run(self.path, run, self.fingerprint, self.name, self.log)

    def due(self, run: Any) -> bool:
        """Whether ``run``, having just finished epoch ``run.epochs_done``, checkpoints now."""
        done = run.epochs_done
        return bool(self.every) and done % self.every == 0 and done < run.total_epochs

    def save_if_due(self, run: Any, data_generator: torch.Generator) -> None:
        if self.due(run):
            checkpoints.save_run(self.path, run, data_generator, self.fingerprint, **self.extra)

    def remove(self) -> None:
        checkpoints.remove(self.path)


def run_weights(run: Any, epoch: int) -> dict[str, Any]:
    """What a run's weight files hold: the student's and the method's state at ``epoch``."""
    return {"student": run.model.state_dict(), "method": run.method.state_dict(), "epoch": epoch}


class RunRecorder:
    """One run's files under ``results_dir`` (``runs/<run_id>.*``) and its ``checkpoint``; either may be
    None (no record: a DDP rank other than 0; no checkpoint: a run that never trained). A run with a record
    keeps its best epoch's weights (``<run_id>.best.pt``)."""

    def __init__(self, checkpoint: RunCheckpoint | None, results_dir: Path | None = None,
                 run_id: str | None = None):
        self.checkpoint = checkpoint
        self.results_dir = None if results_dir is None else Path(results_dir)
        self.run_id = run_id
        self.record: records.RunRecord | None = None  # the record ``start`` wrote, which the end completes
        self.curves: Curves | None = None
        self.resumed = False

    # --- where --------------------------------------------------------------------
    @property
    def record_path(self) -> Path:
        return records.record_path(self.results_dir, self.run_id)

    @property
    def metrics_path(self) -> Path:
        return records.metrics_path(self.results_dir, self.run_id)

    @property
    def weights_path(self) -> Path:
        return self.record_path.with_suffix(".student.pt")

    @property
    def best_weights_path(self) -> Path:
        return self.record_path.with_suffix(".best.pt")

    # --- a run's life -----------------------------------------------------------------
    def resume(self, run: Any) -> torch.Tensor | None:
        """Restore ``run`` from its checkpoint; the data-stream generator state, or None to start over."""
        state = self.checkpoint.resume(run) if self.checkpoint is not None else None
        self.resumed = state is not None
        return state

    def start(self, run: Any, rec: records.RunRecord, curves: Curves | None = None,
              hparams: dict[str, Any] | None = None) -> None:
        """The run (re)starts at ``run.epochs_done``: its record ``rec`` ("running"); its metrics file and
        ``curves`` (given: they start with ``hparams``) rewritten from the history it holds."""
        self.record = rec
        if self.results_dir is None:
            return
        records.write_record(self.results_dir, rec)
        self.metrics_path.unlink(missing_ok=True)
        for entry in run.history:  # the log restarts from what the checkpoint holds
            records.append_jsonl(self.metrics_path, entry)
        self.curves = curves
        if curves is not None:  # so do the curves
            curves.start(hparams or {}, [h for h in run.history if "stage" not in h])
        if not self.resumed:  # starting over: an earlier attempt's best epoch is not this run's
            self.best_weights_path.unlink(missing_ok=True)

    def epoch_end(self, run: Any, data_generator: torch.Generator) -> None:
        """``run`` has just trained epoch ``run.epochs_done``: record it, then checkpoint if due."""
        if self.results_dir is not None:
            entry = run.history[-1]
            records.append_jsonl(self.metrics_path, entry)
            if "stage" not in entry:  # a pre-training stage's epochs are logged, never "best", not curves
                if self.curves is not None:
                    self.curves.epoch(entry)
                if "test_top1" in entry and entry["test_top1"] > max(  # an evaluated epoch (Recipe.eval_every)
                        (h["test_top1"] for h in evaluated(run.history[:-1]) if "stage" not in h), default=-1.0):
                    # a new best epoch (the first of equals, as the record's best_epoch): keep its weights;
                    # written before the checkpoint, so a resume never lacks the best so far
                    checkpoints.atomic_torch_save(run_weights(run, entry["epoch"]), self.best_weights_path)
        if self.checkpoint is not None:
            self.checkpoint.save_if_due(run, data_generator)

    def close_curves(self) -> None:
        if self.curves is not None:
            self.curves.close()
            self.curves = None

    def complete(self, run: Any, epochs: int) -> None:
        """The run is done after ``epochs`` epochs of its main stage; ``self.record`` holds its results.
        The final weights first, then the record that says "complete", then the checkpoint it supersedes."""
        rec = self.record
        checkpoints.atomic_torch_save(run_weights(run, epochs), self.weights_path)
        rec.weights = self.weights_path.name
        rec.weights_best = self.best_weights_path.name
        records.write_record(self.results_dir, rec)
        self.remove_checkpoint()

    def write(self, rec: records.RunRecord) -> None:
        """A record that ends the run another way (failed, not applicable)."""
        self.record = rec
        records.write_record(self.results_dir, rec)

    def remove_checkpoint(self) -> None:
        if self.checkpoint is not None:
            self.checkpoint.remove()
