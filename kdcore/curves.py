"""Training curves as TensorBoard event files: ``<grid>/tensorboard/<run_id>/``.

``tensorboard --logdir results/<grid>`` then shows every run of the grid, named by run id. Each epoch
of a run's history becomes one step (the 1-based epoch) of these tags:

    loss/<term>, loss/total           unweighted terms (CE included) and the weighted total
    loss_weighted/<term>              each term times its weight, as it entered the total
    lr, train/top1, time/epoch_s, time/eval_s, images_per_s
    test/top1, test/top5, test/ece            every registered metric's tag (kdcore.metrics), on the
    fidelity/agreement, fidelity/kl_teacher   epochs evaluated (the last two: runs trained with a teacher)

and the run's resolved hyperparameters (train recipe, method hyperparameters, pair, seed) are written
once as TensorBoard hparams. A run that (re)starts rewrites its folder from the history it holds (its
checkpoint's), exactly as its ``metrics.jsonl`` is rewritten, so a resumed run continues its curves with
no duplicate steps.

With ``--wandb PROJECT`` (and the ``wandb`` package) the same values also go to Weights & Biases: one W&B
run per kdbench run, named by its run id, grouped by grid, the hyperparameters as its config, step = the
epoch. Its id is derived from the results folder, the run id and the run's start time, so a resumed run
continues its W&B run (entries W&B already has are not sent again) and a run started over gets a new
one. ``WANDB_MODE=offline`` logs to disk for a later ``wandb sync``; files go under ``$WANDB_DIR`` or
else ``<grid>/wandb/``. A run W&B refuses to open is said once, on the terminal, and the grid goes on
with TensorBoard only.
"""
from __future__ import annotations

import hashlib
import importlib
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable

from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summary

from kdcore.config import ConfigError
from kdcore.metrics import entry_order
from kdcore.records import error_line

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


def scalars(entry: dict[str, Any]) -> dict[str, float]:
    """One history entry as {tag: value}: what TensorBoard and W&B both log for its epoch; the evaluation's
    metrics under their registered tags (``kdcore.metrics``), where the entry has them."""
    out = {f"loss/{term}": value for term, value in entry["losses"].items()}
    out.update({f"loss_weighted/{term}": value for term, value in entry["weighted_losses"].items()})
    more = {"loss/total": entry["loss"], "lr": entry["lr"], "train/top1": entry["train_top1"],
            "time/epoch_s": entry["time_s"], "time/eval_s": entry.get("eval_time_s"),
            "images_per_s": entry.get("images_per_s"),
            **{m.tag: entry.get(m.key) for m in entry_order()}}
    out.update({tag: value for tag, value in more.items() if value is not None})
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
        for tag, value in scalars(entry).items():
            self.writer.add_scalar(tag, value, entry["epoch"])
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def check_wandb(project: str | None) -> None:
    """``--wandb PROJECT`` before any work: the package must be installed and the name usable."""
    if project is None:
        return
    try:
        importlib.import_module("wandb")  # optional: imported only with --wandb
    except ImportError:
        raise ConfigError("--wandb needs the wandb package, which is not installed: pip install 'kdbench[wandb]' "
                          "(or pip install wandb)") from None
    if not project or len(project) > 128 or re.search(r"[/\\#?%:]", project):
        raise ConfigError(f"bad --wandb {project!r}: a W&B project name, at most 128 characters, none of / \\ # ? % :")


class WandbProject:
    """The W&B side of a grid (``--wandb PROJECT``): opens one W&B run per kdbench run; after W&B refuses one,
    says so once and opens no more."""

    def __init__(self, project: str, group: str, folder: Path, log: Callable[[str], None]):
        self.project, self.group, self.log = project, group, log
        self.folder = None if os.environ.get("WANDB_DIR") else Path(folder)
        self.failed = False

    def open(self, run_id: str, key: str, hparams: dict[str, Any]):
        """A live W&B run named ``run_id``, its id derived from ``key`` (resumed if W&B has it), or None."""
        if self.failed:
            return None
        import wandb  # optional: imported only with --wandb

        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
        settings = wandb.Settings(console="off", quiet=True, silent=True, disable_git=True, save_code=False,
                                  x_disable_stats=True, x_disable_machine_info=True)
        try:
            return wandb.init(project=self.project, name=run_id, group=self.group, config=flat_hparams(hparams),
                              id=hashlib.sha256(key.encode()).hexdigest()[:16], resume="allow", reinit="create_new",
                              dir=None if self.folder is None else str(self.folder), settings=settings)
        except Exception as e:  # W&B unreachable, not logged in, ...: the training goes on
            self.failed = True
            self.log(f"wandb: cannot open a run ({type(e).__name__}: {error_line(e)}); curves go to TensorBoard only")
            return None


class WandbWriter:
    """One run's curves in W&B, as ``CurveWriter`` writes them to TensorBoard (same tags, step = epoch)."""

    def __init__(self, project: WandbProject, run_id: str, key: str):
        self.project, self.run_id, self.key = project, run_id, key
        self.run = None

    def start(self, hparams: dict[str, Any], history: list[dict[str, Any]]) -> None:
        self.close()
        self.run = self.project.open(self.run_id, self.key, hparams)
        for entry in history:
            self.epoch(entry)

    def epoch(self, entry: dict[str, Any]) -> None:
        if self.run is not None and entry["epoch"] >= self.run.step:  # a resumed W&B run has the earlier ones
            self.run.log(scalars(entry), step=entry["epoch"])

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


class Curves:
    """Every curve writer of one run: TensorBoard's, and W&B's with ``--wandb``."""

    def __init__(self, writers: list):
        self.writers = writers

    def start(self, hparams: dict[str, Any], history: list[dict[str, Any]]) -> None:
        for w in self.writers:
            w.start(hparams, history)

    def epoch(self, entry: dict[str, Any]) -> None:
        for w in self.writers:
            w.epoch(entry)

    def close(self) -> None:
        for w in self.writers:
            w.close()
