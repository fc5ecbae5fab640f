"""Training curves as TensorBoard event files: ``<grid>/tensorboard/<run_id>/``.

``tensorboard --logdir results/<grid>`` then shows every run of the grid, named by run id. Each epoch
of a run's history becomes one step (the 1-based epoch) of these tags:

    loss/<term>, loss/total           unweighted terms (CE included) and the weighted total
    loss_weighted/<term>              each term times its weight, as it entered the total
    lr, train/top1, test/top1, test/top5, test/ece, time/epoch_s, time/eval_s, images_per_s
    fidelity/agreement, fidelity/kl_teacher   (runs trained with a teacher)

and the run's resolved hyperparameters (train recipe, method hyperparameters, pair, seed) are written
once as TensorBoard hparams. A run that (re)starts rewrites its folder from the history it holds (its
checkpoint's), exactly as its ``metrics.jsonl`` is rewritten, so a resumed run continues its curves with
no duplicate steps.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summary

METRIC_TAGS = ("test/top1", "test/top5", "train/top1", "loss/total")


def curves_dir(results_dir: Path, run_id: str) -> Path:
    return Path(results_dir) / "tensorboard" / run_id


def flat_hparams(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config -> {"train.lr": 0.05, "kd.T": 4.0, ...}; TensorBoard takes numbers, strings and bools."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_hparams(value, name + "."))
        elif isinstance(value, (bool, int, float, str)):
            out[name] = value
        elif value is not None:
            out[name] = str(value)
    return out


class CurveWriter:
    """One run's event files; ``start`` (re)writes the history, ``epoch`` appends one entry."""

    def __init__(self, results_dir: Path, run_id: str):
        self.folder = curves_dir(results_dir, run_id)
        self.writer: SummaryWriter | None = None

    def start(self, hparams: dict[str, Any], history: list[dict[str, Any]]) -> None:
        self.close()
        shutil.rmtree(self.folder, ignore_errors=True)
        self.writer = SummaryWriter(str(self.folder))
        for summary in hparams_summary(flat_hparams(hparams), {tag: 0.0 for tag in METRIC_TAGS}):
            self.writer.file_writer.add_summary(summary)
        for entry in history:
            self.epoch(entry)

    def epoch(self, entry: dict[str, Any]) -> None:
        if self.writer is None:
            return
        step, w = entry["epoch"], self.writer
        for term, value in entry["losses"].items():
            w.add_scalar(f"loss/{term}", value, step)
        for term, value in entry["weighted_losses"].items():
            w.add_scalar(f"loss_weighted/{term}", value, step)
        scalars = {"loss/total": entry["loss"], "lr": entry["lr"], "train/top1": entry["train_top1"],
                   "test/top1": entry["test_top1"], "test/top5": entry["test_top5"], "time/epoch_s": entry["time_s"],
                   "time/eval_s": entry.get("eval_time_s"), "images_per_s": entry.get("images_per_s"),
                   "test/ece": entry.get("test_ece"), "fidelity/agreement": entry.get("test_agreement"),
                   "fidelity/kl_teacher": entry.get("test_kl_teacher")}
        for tag, value in scalars.items():
            if value is not None:
                w.add_scalar(tag, value, step)
        w.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
