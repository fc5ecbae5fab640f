"""The one training loop: teachers, students and the plain baseline all go through ``train_cohort``.

A *cohort* is a list of student runs that share one batch stream (same pair,
same seed): each batch is drawn and augmented once, the frozen teacher runs
once, then every student takes its own step with its own method, optimizer,
schedule and RNG. A solo run is a cohort of one, so cohort and solo training
are the same code. The loop knows methods only through their declarations
(``needs_teacher``, ``needs_features``, ``needs_preact``, ``prepare``'s
``extra_index``, ``views``) and their named loss terms, which it weights, sums and logs.
A view (MLKD's strong augmentation) is drawn from a generator seeded by the run's seed,
the view, the epoch and the step, once per seed in the cohort, and the teacher runs on it once.
Before every step it hands the method its ``Progress`` (fractional epoch, total),
derived from the epoch and step counters, so a resumed run sees the same values.
Each evaluation measures test top-1/top-5 (and, when the data holds out a validation split, its top-1:
``val_top1``) and the student's calibration (ECE) and, given a teacher, its agreement with and KL from
the teacher, whose test outputs are computed once per cohort (``kdcore.fidelity``): the metrics registered
in ``kdcore.metrics``, which a new one joins.
"""
from __future__ import annotations

import itertools
import math
import time
import zlib
from contextlib import contextmanager
from dataclasses import fields, is_dataclass, replace
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from kdcore.contract import Batch, Progress, ViewOutput
from kdcore.distiller import Distiller, Stage

from kdcore.cpus import look_at_load
from kdcore.costs import cuda_step_peak, optimizer_state_bytes, tensor_bytes
from kdcore.fidelity import TeacherTest
from kdcore.metrics import entry_order
from kdcore.steptimer import StepTimer, section
from kdcore.recipe import FastPaths, Recipe

__all__ = ["StudentRun", "DivergenceError", "train_cohort", "evaluate", "eval_metrics",
           "val_top1", "TeacherTest", "StepTimer", "seed_for", "freeze",
           "draw_views", "view_generator", "compute_terms", "compute_stage_terms", "stage_modes",
           "weigh_terms", "unique_trainable"]


def _autocast(device: torch.device, fast: dict[str, Any]):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=fast.get("amp") == "bf16")


def map_tensors(obj: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """``obj`` (a ModelOutput, ViewOutput, dict, list or tuple of them, nested) with ``fn`` applied to every
    tensor in it; modules (a ModelOutput's classifier) and other values are kept as they are."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, (list, tuple)):
        return type(obj)(map_tensors(v, fn) for v in obj)
    if isinstance(obj, dict):
        return {k: map_tensors(v, fn) for k, v in obj.items()}
    if is_dataclass(obj) and not isinstance(obj, type):
        return replace(obj, **{f.name: map_tensors(getattr(obj, f.name), fn) for f in fields(obj)})
    return obj


def _detach_clone(out):
    """A normal (non-inference) copy of a teacher's ModelOutput."""
    return map_tensors(out, torch.Tensor.clone)


def _upcast(t: torch.Tensor) -> torch.Tensor:
    return t.float() if t.is_floating_point() and t.dtype in (torch.bfloat16, torch.float16) else t


@contextmanager
def losses_in_float32(device_type: str, batch: Batch):
    """Where the loss terms are computed: autocast off, and the step's outputs that ``batch`` carries (views,
    extra samples) upcast to float32; ``upcast`` (yielded) does the same to the outputs passed directly.
    The forwards run under the fast paths' autocast (bf16 on CUDA), but every reference computes its loss in
    float32, and bf16 arithmetic there changes the number: a bf16 matmul cancels in rkd's
    |a|^2 + |b|^2 - 2ab (its distance term several times too large for close embeddings), crd's
    exp(score / 0.07) turns bf16 rounding into percent errors. Without autocast (fp32) nothing changes."""
    batch.views = map_tensors(batch.views, _upcast)
    batch.extras = map_tensors(batch.extras, _upcast)
    with torch.autocast(device_type, enabled=False):
        yield lambda out: map_tensors(out, _upcast)


def teacher_outputs(teacher: nn.Module, x: torch.Tensor, device: torch.device, fast: dict[str, Any],
                    preact: bool):
    """The frozen teacher's ``ModelOutput`` for batch ``x``, as every student of a cohort receives it:
    under ``inference_mode`` (then cloned once, so methods may save it for backward) or ``no_grad``, in the
    fast paths' autocast dtype."""
    no_grad = torch.inference_mode if fast["teacher_inference_mode"] else torch.no_grad
    with no_grad(), _autocast(device, fast):
        out = teacher.forward_kd(x, preact=preact)
    return _detach_clone(out) if fast["teacher_inference_mode"] else out


def seed_for(*parts: Any) -> int:
    """A stable 31-bit seed from any labels (Python's hash() is salted per process)."""
    return zlib.crc32("/".join(map(str, parts)).encode()) & 0x7FFFFFFF


def freeze(model: nn.Module) -> nn.Module:
    """Teacher mode: eval (BN uses running stats, never updates them) and no gradients."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class DivergenceError(RuntimeError):
    def __init__(self, run_id: str, epoch: int, step: int, terms: dict[str, float]):
        self.epoch, self.step = epoch, step
        bad = ", ".join(f"{k}={v:.4g}" for k, v in terms.items())
        super().__init__(f"{run_id}: loss is not finite at epoch {epoch + 1}, step {step} ({bad}); "
                         f"lower the learning rate or the method's loss weights")


def compute_terms(model, method: Distiller, x, y, teacher_out, batch: Batch, extra_x=None, view_inputs=None,
                  timer: StepTimer | None = None):
    """Student forward pass(es) and the method's named, unweighted loss terms (CE included).

    The extra samples get a separate forward call (their own BN batch), as the
    triplet authors' code does; so does each view the method declares (``view_inputs``:
    ``{name: (images, teacher output)}``), as MLKD's code runs the student on its weak and
    strong views one after the other. ``timer``: the forwards count as "student fwd", the method's
    ``losses`` as "losses" (the CE is in neither).
    """
    with section(timer, "student fwd"):
        student_out = model.forward_kd(x, preact=method.needs_preact)
        if extra_x is not None:
            extra = model.forward_kd(extra_x, preact=method.needs_preact)
            batch.extras["extra_student"] = extra if method.needs_features else extra.logits_only()
        for name in method.views:
            x_view, teacher_view = view_inputs[name]
            view = model.forward_kd(x_view, preact=method.needs_preact)
            batch.views[name] = ViewOutput(view if method.needs_features else view.logits_only(), teacher_view)
    with losses_in_float32(x.device.type, batch) as upcast:
        student_out, teacher_out = upcast(student_out), upcast(teacher_out)
        terms = {"ce": F.cross_entropy(student_out.logits, y)}
        with section(timer, "losses"):
            if method.needs_features:
                terms.update(method.losses(student_out, teacher_out, batch))
            else:  # a method gets what it declared: logits only
                terms.update(method.losses(student_out.logits_only(),
                                           teacher_out.logits_only() if teacher_out is not None else None, batch))
    return student_out.logits, terms


def compute_stage_terms(model, method: Distiller, stage: str, x, teacher_out, batch: Batch,
                        timer: StepTimer | None = None):
    """The student's forward pass and the named terms of pre-training stage ``stage`` (their sum is the
    stage's loss, no cross-entropy); the modes are the caller's (the stage's modules in train mode)."""
    with section(timer, "student fwd"):
        out = model.forward_kd(x, preact=method.needs_preact)
    if not method.needs_features:
        out = out.logits_only()
        teacher_out = teacher_out.logits_only() if teacher_out is not None else None
    with losses_in_float32(x.device.type, batch) as upcast, section(timer, "losses"):
        terms = method.stage_losses(stage, upcast(out), upcast(teacher_out), batch)
    return out.logits, terms


def stage_modes(model: nn.Module, method: Distiller, stage: str) -> None:
    """The modes of pre-training stage ``stage`` (RepDistiller's ``init()``: ``model_s.eval()``, then
    ``init_modules.train()``): the student and the method in eval mode, the modules the stage trains in train
    mode."""
    model.eval()
    method.eval()
    for module in method.stage_modules(stage, model):
        module.train()


def weigh_terms(method: Distiller, terms: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """A step's total loss and its weighted terms: each term times its weight (``"ce"``: ``ce_weight()``,
    the others: ``loss_weights()``, read now, so a scheduled weight follows ``progress``), terms of weight 0
    left out, summed in the order of ``terms``. The harness and ``benchmarks.api`` both weigh with it."""
    weights = {"ce": method.ce_weight(), **method.loss_weights()}
    unweighted = set(terms) - set(weights)
    if unweighted:
        raise RuntimeError(f"method {method.name} returned terms without a weight: {sorted(unweighted)}")
    weighted = {k: weights[k] * v for k, v in terms.items() if weights[k] != 0}
    return sum(weighted.values()), weighted


class StudentRun:
    """One student being trained with one method: its own model, optimizer, schedule and RNG."""

    def __init__(self, run_id: str, model: nn.Module, method: Distiller, recipe: Recipe, seed: int):
        self.run_id = run_id
        self.model = model
        self.method = method
        self.recipe = recipe
        self.seed = seed
        # the method's own modules (regressors, embeddings) train with the student, as in RepDistiller
        params = list(model.parameters()) + method.trainable_parameters()
        # foreach: one multi-tensor kernel per update op instead of one per parameter; PyTorch
        # picks it only for CUDA by default. On the CPU it is about 5% faster for resnet8x4 and
        # gives the same bits as the per-parameter loop (same elementwise ops in the same order).
        self.optimizer = torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum,
                                         weight_decay=recipe.weight_decay, foreach=True)
        # pre-training stages (RepDistiller's init_epochs): each its own SGD over the modules it trains
        self.stages: list[Stage] = list(method.stages())
        self.stage_epochs = sum(st.epochs for st in self.stages)
        self.stage_optimizers = {
            st.name: torch.optim.SGD(unique_trainable(method.stage_modules(st.name, model)),
                                     lr=st.lr if st.lr is not None else recipe.lr, momentum=recipe.momentum,
                                     weight_decay=recipe.weight_decay, foreach=True)
            for st in self.stages}
        self._stage: Stage | None = None
        self.generator = torch.Generator().manual_seed(seed_for(seed, method.name, "method"))
        self.epochs_done = 0
        self.history: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self.fast: dict[str, Any] = {}  # resolved FastPaths, set by train_cohort
        self.step_timer: StepTimer | None = None  # times the step's parts when given; set by train_cohort
        self.time_s = 0.0
        self.teacher_ece: float | None = None  # the teacher's test ECE (percent), once a teacher was there
        self.cuda_peaks: dict[str, int] = {}  # CUDA only: max over this run's steps (costs.cuda_step_peak)
        self._reset_epoch_stats()

    @property
    def total_epochs(self) -> int:
        """Epochs of the batch stream this run trains: its pre-training stages' and the recipe's."""
        return self.stage_epochs + self.recipe.epochs

    def stage_at(self, epoch: int) -> tuple[Stage | None, int]:
        """(the pre-training stage, its 0-based epoch) at stream epoch ``epoch``, or (None, main epoch)."""
        for st in self.stages:
            if epoch < st.epochs:
                return st, epoch
            epoch -= st.epochs
        return None, epoch

    # --- state ----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        out = {"model": self.model.state_dict(), "method": self.method.state_dict(),
               "optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state(),
               "epochs_done": self.epochs_done, "history": self.history, "time_s": self.time_s,
               "cuda_peaks": dict(self.cuda_peaks)}
        if self.stage_optimizers:
            out["stage_optimizers"] = {k: o.state_dict() for k, o in self.stage_optimizers.items()}
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.method.load_state_dict(state["method"])
        self.optimizer.load_state_dict(state["optimizer"])
        for k, o in self.stage_optimizers.items():
            o.load_state_dict(state["stage_optimizers"][k])
        self.generator.set_state(state["generator"])
        self.epochs_done = state["epochs_done"]
        self.history = list(state["history"])
        self.time_s = state["time_s"]
        self.cuda_peaks = dict(state.get("cuda_peaks", {}))  # checkpoints from before it was kept: none

    def memory_bytes(self) -> dict[str, int]:
        """Exact bytes of what this run keeps: the student's parameters, the method's own modules'
        parameters, every optimizer's state (momentum buffers: exact once each parameter took a step),
        the student's and the method's buffers (BN statistics, CRD's memory banks)."""
        return {"student_param_bytes": tensor_bytes(self.model.parameters()),
                "method_param_bytes": tensor_bytes(self.method.parameters()),
                "optimizer_state_bytes": optimizer_state_bytes([self.optimizer, *self.stage_optimizers.values()]),
                "student_buffer_bytes": tensor_bytes(self.model.buffers()),
                "method_buffer_bytes": tensor_bytes(self.method.buffers())}

    # --- training ----------------------------------------------------------------
    def _reset_epoch_stats(self) -> None:
        self._sums: dict[str, torch.Tensor] = {}
        self._weighted: dict[str, torch.Tensor] = {}
        self._correct = 0
        self._seen = 0
        self._epoch_time = 0.0

    def begin_epoch(self, epoch: int) -> None:
        """Stream epoch ``epoch``: a pre-training stage's (only its modules in train mode) or the main one's."""
        self._stage, main_epoch = self.stage_at(epoch)
        if self._stage is None:
            lr = self.recipe.lr_at(main_epoch)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self.model.train()
            self.method.train()
        else:
            stage_modes(self.model, self.method, self._stage.name)
        self._reset_epoch_stats()

    # step() in parts, so a distributed run (benchmarks/distributed.py) overrides only what differs
    def prepare_batch(self, x, y, index, data, device) -> tuple[Batch, torch.Tensor | None]:
        """The method's per-batch draws, and the extra samples it asked for (augmented), if any."""
        batch = Batch(x, y, index, progress=self.method.progress)
        with section(self.step_timer, "prepare"):
            batch.extras = self.method.prepare(batch, self.generator)
        extra_index = batch.extras.get("extra_index")
        if extra_index is None:
            return batch, None
        with section(self.step_timer, "extra fetch"):
            extra_x = data.fetch(extra_index, self.generator, device)
            if self.fast.get("channels_last"):
                extra_x = extra_x.contiguous(memory_format=torch.channels_last)
        return batch, extra_x

    def forward_terms(self, x, y, teacher_out, batch: Batch, extra_x, view_inputs=None):
        return compute_terms(self.model, self.method, x, y, teacher_out, batch, extra_x, view_inputs,
                             self.step_timer)

    def global_total(self, total: torch.Tensor, n: int) -> torch.Tensor:
        """The loss that decides divergence (distributed: the mean over all ranks)."""
        return total

    def backward(self, total: torch.Tensor, n: int) -> None:
        total.backward()

    def progress(self, epoch: int, step: int, data) -> Progress:
        """Where the main training stands at 0-based ``step`` of 0-based stream ``epoch``: ``main epoch + step /
        steps_per_epoch``, ``steps_per_epoch`` = ceil(training samples / batch size) (every loader keeps the last
        batch); during a pre-training stage, its start (0)."""
        stage, main_epoch = self.stage_at(epoch)
        if stage is not None:
            return Progress(0.0, self.recipe.epochs)
        return Progress.at(main_epoch, step, math.ceil(data.num_train / self.recipe.batch_size), self.recipe.epochs)

    def step(self, x, y, index, teacher_out, data, device, epoch: int, step: int,
             view_inputs: dict[str, tuple[torch.Tensor, Any]] | None = None) -> torch.Tensor:
        """One optimizer step; returns the (detached) weighted total loss.

        ``view_inputs``: ``{name: (images, teacher output)}`` for the views the method declares, drawn by
        ``train_cohort`` with ``draw_views``.
        """
        if self._stage is not None:
            return self.stage_step(x, y, index, teacher_out, device, epoch, step)
        t0 = time.perf_counter()
        method = self.method
        method.set_progress(self.progress(epoch, step, data))
        if method.views and not (view_inputs and set(method.views) <= set(view_inputs)):
            raise ValueError(f"{method.name} trains on the views {list(method.views)}: pass their images and "
                             f"teacher outputs (train_cohort draws them with draw_views)")
        batch, extra_x = self.prepare_batch(x, y, index, data, device)
        with _autocast(device, self.fast):
            logits, terms = self.forward_terms(x, y, teacher_out, batch, extra_x, view_inputs)
        total, weighted = weigh_terms(method, terms)
        n = y.numel()
        checked = self.global_total(total, n)
        if not bool(torch.isfinite(checked)):
            raise DivergenceError(self.run_id, epoch, step, {k: float(v.detach()) for k, v in terms.items()})
        self.optimizer.zero_grad(set_to_none=True)
        with section(self.step_timer, "backward"):
            self.backward(total, n)
        with section(self.step_timer, "optimizer"):
            self.optimizer.step()
        self._tally(terms, weighted, logits, y, t0)
        return checked.detach()

    def _tally(self, terms: dict[str, torch.Tensor], weighted: dict[str, torch.Tensor], logits, y, t0: float) -> None:
        """Add one step to the epoch's sums: terms raw and weighted (per sample), correct predictions, time."""
        n = y.numel()
        with torch.no_grad():
            for k, v in terms.items():
                self._sums[k] = self._sums.get(k, 0.0) + v.detach() * n
            for k, v in weighted.items():
                self._weighted[k] = self._weighted.get(k, 0.0) + v.detach() * n
            self._correct += (logits.argmax(1) == y).sum()
        self._seen += n
        self._epoch_time += time.perf_counter() - t0

    def optimizer_lr(self, stage: Stage | None, epoch: int) -> float:
        """The learning rate of a stage (constant) or of main epoch ``epoch`` (the recipe's schedule)."""
        if stage is None:
            return self.recipe.lr_at(epoch)
        return stage.lr if stage.lr is not None else self.recipe.lr

    def stage_step(self, x, y, index, teacher_out, device, epoch: int, step: int) -> torch.Tensor:
        """One step of a pre-training stage: its own optimizer on the sum of the method's stage terms."""
        t0 = time.perf_counter()
        method, stage = self.method, self._stage
        method.set_progress(Progress(0.0, self.recipe.epochs))
        batch = Batch(x, y, index, progress=method.progress)
        timer = self.step_timer
        with _autocast(device, self.fast):
            logits, terms = compute_stage_terms(self.model, method, stage.name, x, teacher_out, batch, timer)
        total = sum(terms.values())
        n = y.numel()
        checked = self.global_total(total, n)
        if not bool(torch.isfinite(checked)):
            raise DivergenceError(self.run_id, epoch, step, {k: float(v.detach()) for k, v in terms.items()})
        optimizer = self.stage_optimizers[stage.name]
        optimizer.zero_grad(set_to_none=True)
        with section(timer, "backward"):
            self.stage_backward(total, n, optimizer)
        with section(timer, "optimizer"):
            optimizer.step()
        self._tally(terms, terms, logits, y, t0)  # a stage's terms are unweighted (summed)
        return checked.detach()

    def stage_backward(self, total: torch.Tensor, n: int, optimizer: torch.optim.Optimizer) -> None:
        """The gradients of a pre-training stage's ``total`` for ``optimizer``'s parameters."""
        total.backward()

    def end_epoch(self, epoch: int, data, device, shared_time: float,
                  teacher_test: TeacherTest | None = None) -> dict[str, Any]:
        """Evaluate, log and return the epoch's history entry. ``teacher_test``: the teacher's test outputs
        (shared by the cohort), for the entry's ``test_agreement`` and ``test_kl_teacher`` (left out without)."""
        t0 = time.perf_counter()
        stage, stage_epoch = self.stage_at(epoch)
        test: dict[str, float] = {}
        if self.recipe.evaluates(stage_epoch, stage.epochs if stage is not None else self.recipe.epochs):
            test = eval_metrics(self.model, data, device, self.recipe.eval_batch_size, teacher_test)
            if getattr(data, "num_val", 0):  # the validation split (--val-fraction): what a sweep is tuned on
                test = {"val_top1": val_top1(self.model, data, device, self.recipe.eval_batch_size), **test}
            if teacher_test is not None:
                self.teacher_ece = teacher_test.ece(self.recipe.eval_batch_size)
        seen = max(self._seen, 1)
        losses = {k: float(v) / seen for k, v in self._sums.items()}
        weighted = {k: float(v) / seen for k, v in self._weighted.items()}
        train_time = self._epoch_time + shared_time
        entry = {
            # a stage's entries count its own epochs and say which stage; the main ones count from 1 again
            **({"stage": stage.name} if stage is not None else {}),
            "epoch": stage_epoch + 1,
            "lr": self.optimizer_lr(stage, stage_epoch),
            "loss": sum(weighted.values()),
            "losses": losses,
            "weighted_losses": weighted,
            "train_top1": 100.0 * float(self._correct) / seen,
            # test_top1, test_top5, test_ece (and test_agreement, test_kl_teacher with a teacher), and any other
            # registered metric (kdcore.metrics), on the epochs evaluated (Recipe.eval_every)
            **test,
            "time_s": train_time,
            "eval_time_s": time.perf_counter() - t0,
            "images_per_s": self._seen / train_time if train_time > 0 else math.nan,
            "threads": torch.get_num_threads(),  # float sums depend on it; --threads auto may change it by epoch
        }
        self.history.append(entry)
        self.epochs_done = epoch + 1
        self.time_s += train_time + entry["eval_time_s"]
        return entry


def view_generator(seed: int, name: str, epoch: int, step: int) -> torch.Generator:
    """The generator of one view's images at one step: a function of the run's seed, the view, the epoch and
    the step only, so every cohort member with that seed (and a solo run, and a resumed one) draws the same."""
    return torch.Generator().manual_seed(seed_for(seed, "view", name, epoch, step))


def draw_views(runs: list["StudentRun"], index, data, device, epoch: int, step: int, teacher, fast,
               preact: bool = False, logits_only: bool = True,
               timer: StepTimer | None = None) -> dict[int, dict[str, tuple[torch.Tensor, Any]]]:
    """The views ``runs`` declare for the batch ``index``, once per (seed, view): ``{seed: {name: (images,
    teacher output or None)}}``; the teacher (if given) runs once on each view's images. ``timer``: drawing
    a view counts as "data", the teacher on it as "teacher fwd"."""
    out: dict[int, dict[str, tuple[torch.Tensor, Any]]] = {}
    for r in runs:
        for name in r.method.views:
            if name in out.setdefault(r.seed, {}):
                continue
            with section(timer, "data"):
                x_view = data.view(name, index, view_generator(r.seed, name, epoch, step), device)
                if fast.get("channels_last"):
                    x_view = x_view.contiguous(memory_format=torch.channels_last)
            t_view = None
            if teacher is not None:
                with section(timer, "teacher fwd"):
                    t_view = teacher_outputs(teacher, x_view, device, fast, preact)
            if t_view is not None and logits_only:
                t_view = t_view.logits_only()
            out[r.seed][name] = (x_view, t_view)
    return out


def unique_trainable(modules: list[nn.Module]) -> list[nn.Parameter]:
    """The parameters of ``modules`` that require grad, each once, in module order."""
    seen, out = set(), []
    for module in modules:
        for p in module.parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                out.append(p)
    return out


@torch.no_grad()
def eval_metrics(model: nn.Module, data, device, batch_size: int = 256,
                 teacher_test: TeacherTest | None = None) -> dict[str, float]:
    """One pass over the test set, every registered metric (``kdcore.metrics``) accumulated over its batches:
    ``test_top1``, ``test_top5`` (percent, top-k capped at the class count), ``test_ece`` (percent,
    ``kdcore.fidelity``) and, with the teacher's test outputs, ``test_agreement`` (percent) and
    ``test_kl_teacher`` (KL(teacher || student) at T = 1, nats, mean over the test set); then any other
    registered metric, in ``entry_order``."""
    was_training = model.training
    model.eval()
    metrics = entry_order(teacher=teacher_test is not None)
    accumulators = [m.start() for m in metrics]
    teacher_batches = iter(teacher_test.batches(batch_size)) if teacher_test is not None else None
    for x, y in data.test_batches(batch_size, device):
        logits = model(x)
        teacher = next(teacher_batches) if teacher_batches is not None else None
        for acc in accumulators:
            acc.add(logits, y, teacher)
    model.train(was_training)
    return {m.key: acc.value() for m, acc in zip(metrics, accumulators)}


@torch.no_grad()
def val_top1(model: nn.Module, data, device, batch_size: int = 256) -> float:
    """Top-1 accuracy (percent) on the data's validation split (``InMemoryData.hold_out``)."""
    was_training = model.training
    model.eval()
    correct = total = 0
    for x, y in data.val_batches(batch_size, device):
        correct += int((model(x).argmax(1) == y).sum())
        total += y.numel()
    model.train(was_training)
    return 100.0 * correct / max(total, 1)


def evaluate(model: nn.Module, data, device, batch_size: int = 256) -> tuple[float, float]:
    """Top-1 and top-5 test accuracy in percent (top-k capped at the class count)."""
    m = eval_metrics(model, data, device, batch_size)
    return m["test_top1"], m["test_top5"]


def train_cohort(
    runs: list[StudentRun],
    data,
    device: torch.device,
    teacher: nn.Module | None = None,
    data_generator: torch.Generator | None = None,
    on_epoch_end: Callable[[int, list[StudentRun]], None] | None = None,
    on_step: Callable[[], None] | None = None,
    fast: dict[str, Any] | None = None,
    step_timer: StepTimer | None = None,
    teacher_test: TeacherTest | None = None,
) -> list[StudentRun]:
    """Train ``runs`` together on one batch stream; a run that fails is set aside, the others go on.

    Every run must have the same ``epochs`` and ``batch_size`` and the same
    ``epochs_done`` (resumed cohorts restart from a common epoch). A run with pre-training stages
    trains more epochs of the stream (``total_epochs``): the cohort goes on until the last run is
    done, each run taking part in the epochs it trains, so every run sees the batches it would alone. The teacher,
    if given, must be frozen (``freeze``); it runs once per batch, under
    ``no_grad``, only if a method needs it, and its outputs are shared read-only. Given a teacher, every
    evaluation also measures each student's agreement with it and KL from it (``kdcore.fidelity``),
    from the teacher's test outputs computed once for the whole cohort (``TeacherTest``).

    ``step_timer`` (``kdcore.steptimer.StepTimer``): time the parts of every step (batch draw, teacher
    forward, each run's prepare, student forward, extra fetch, losses, backward, optimizer), not the
    evaluations; without it the loop computes the same bits.

    ``teacher_test``: the teacher's test outputs (``TeacherTest`` of this ``teacher`` and ``data``) kept by the
    caller for every cohort it trains with that teacher, so the teacher passes over the test set once for all of
    them instead of once per cohort (a resnet32x4 over CIFAR-100's 10,000 test images: minutes on a CPU); the
    same bits either way (``kdcore.fidelity``). Without it the cohort makes its own.
    """
    if not runs:
        return runs
    first = runs[0].recipe
    for r in runs:
        if (r.recipe.epochs, r.recipe.batch_size) != (first.epochs, first.batch_size) or \
                r.epochs_done != runs[0].epochs_done:
            raise ValueError("a cohort's runs must share epochs, batch size and progress")
    if teacher is not None and teacher.training:
        raise ValueError("the teacher must be frozen (kdcore.train.freeze) before training students")
    generator = data_generator or torch.Generator().manual_seed(runs[0].seed)
    fast = fast if fast is not None else FastPaths().resolve(device)
    for r in runs:
        r.fast = fast
        r.step_timer = step_timer
        if fast["channels_last"]:
            r.model.to(memory_format=torch.channels_last)
        if fast["compile"] and not hasattr(r.model, "_compiled_forward_kd"):
            r.model._compiled_forward_kd = True
            r.model.forward_kd = torch.compile(r.model.forward_kd)
    if teacher is not None and fast["channels_last"]:
        teacher.to(memory_format=torch.channels_last)
    if teacher_test is not None and (teacher_test.teacher is not teacher or teacher_test.data is not data
                                     or torch.device(teacher_test.device) != torch.device(device)):
        raise ValueError("teacher_test holds the test outputs of another teacher, data set or device: pass "
                         "TeacherTest(teacher, data, device) of this cohort's")
    # the teacher's test outputs for every evaluation of the cohort's runs: one test pass, on first use
    if teacher_test is None and teacher is not None:
        teacher_test = TeacherTest(teacher, data, device)
    for epoch in range(runs[0].epochs_done, max(r.total_epochs for r in runs)):
        active = [r for r in runs if r.error is None and epoch < r.total_epochs]
        if not active:
            break
        look_at_load()  # under --threads auto, the thread count follows the machine's load (kdcore/cpus.py)
        for r in active:
            r.begin_epoch(epoch)
        use_teacher = teacher is not None and any(r.method.needs_teacher for r in active)
        preact = any(r.method.needs_preact for r in active)
        # no method reads the teacher's maps: release them right after its forward
        teacher_logits_only = not any(r.method.needs_features for r in active)
        shared_time = 0.0
        batches = data.epoch_batches(first.batch_size, generator, device)
        for step in itertools.count():
            t0 = time.perf_counter()
            with section(step_timer, "data"):
                drawn = next(batches, None)  # drawn and augmented once for the whole cohort
                if drawn is not None:
                    x, y, index = drawn
                    if fast["channels_last"]:
                        x = x.contiguous(memory_format=torch.channels_last)
            if drawn is None:
                break
            teacher_out = None
            if use_teacher:
                with section(step_timer, "teacher fwd"):
                    teacher_out = teacher_outputs(teacher, x, device, fast, preact)
                    if teacher_logits_only:
                        teacher_out = teacher_out.logits_only()
            # other views (MLKD's strong one): drawn, and the teacher run on them, once per seed; a failure
            # there fails the runs that asked for a view, not their cohort
            viewing = [r for r in active if r.error is None and r.method.views]
            try:
                views = draw_views(viewing, index, data, device, epoch, step, teacher if use_teacher else None,
                                   fast, preact, teacher_logits_only, step_timer)
            except Exception as e:
                views = {}
                for r in viewing:
                    r.error, r.error_at = e, (epoch, step)
            shared_time += time.perf_counter() - t0
            for r in active:
                if r.error is not None:
                    continue
                try:
                    with cuda_step_peak(r.cuda_peaks, device):
                        r.step(x, y, index, teacher_out, data, device, epoch, step, views.get(r.seed))
                except Exception as e:  # one run's failure never stops its cohort
                    r.error = e
                    r.error_at = (epoch, step)
            if on_step is not None:
                on_step()
        survivors = [r for r in active if r.error is None]
        for r in survivors:
            # the teacher pass and the batch preparation are shared: each run is charged its share
            r.end_epoch(epoch, data, device, shared_time / max(len(survivors), 1), teacher_test)
        if on_epoch_end is not None:
            on_epoch_end(epoch, runs)
    return runs
