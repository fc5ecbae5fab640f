"""Training-step speed: ``python -m benchmarks.speed [--quick]``.

Measures images/s of the *training step* (data + frozen-teacher forward +
student step(s); no evaluation) for a list of methods on one teacher:student
pair, three ways, side by side in one process:

  plain   a RepDistiller-style loop written here: a torchvision-``datasets``-like
          Dataset over the same uint8 images returning PIL images through
          ``transforms.Compose([RandomCrop(size, padding), RandomHorizontalFlip(),
          ToTensor(), Normalize(...)])``, a ``DataLoader(shuffle=True,
          num_workers=W)``, fp32, one method at a time: per batch the teacher
          forward under no_grad, the student forward, the method's losses
          (kdbench's own method objects, so only the loop and the data differ),
          backward, SGD step. Methods that draw training samples (triplet/pair
          with negatives="dataset") get their negative images from the Dataset,
          as the triplet authors' dataset does; CRD gets the sample index and its
          K contrast indices from the Dataset, as RepDistiller's
          ``CIFAR100InstanceSample`` (``np.random.choice`` per sample).
  solo    kdbench's ``train_cohort``, each method as a cohort of one, with the
          fast paths of ``benchmarks.train.FastPaths`` (``--amp``,
          ``--channels-last``, ``--teacher-inference-mode``, ``--compile``;
          ``auto``: on for CUDA, off on CPU), passed by ``harness_kwargs``.
  cohort  kdbench's ``train_cohort``, all methods in one cohort (one batch
          stream, one teacher forward per batch).

Every measurement builds fresh models, runs ``--warmup`` steps, then times
``--steps`` steps; measurements are interleaved (each repeat runs plain and
solo of every method and the cohort, as a cycle rotated by a fraction of its
length per repeat, plain/solo swapped on odd repeats) and the median over
``--repeats`` is reported, so load from other processes hits all candidates
alike (the JSON also has the best-of-repeats figures). One untimed pass of the
cohort and the plain loop first absorbs the process's one-off start-up cost.
Each repeat also times the *shared part* alone: drawing and augmenting a batch
and the teacher forward, as ``train_cohort`` does them once per batch for all
its students. From it the output states what sharing alone can give: the solo
runs' total time over that total minus the work a cohort does once instead of
once per run (M - 1 batch draws, U - 1 teacher forwards for the U methods that
use the teacher), i.e. cohort/solo if the cohort's students stepped exactly as
fast as solo ones. ``--breakdown`` then times the parts of the step (data,
teacher forward, prepare, student forward, losses, backward, optimizer) of
every configuration, and sets the cohort against the solo runs summed, split
into the shared parts and the students' own parts: whether the students step
as fast in the cohort as alone.

On CPU the harness's batches come out of its on-device crop channels_last-
strided (model weights stay NCHW); oneDNN convolutions are faster on them, and
the output says so. The plain loop's DataLoader workers default to 0 on <= 2
cores (they would compete with the training threads; measured slower).

Throughput: images/s = (training images stepped, per student) x (number of
students) / wall time. A triplet step counts its batch once, though it also
runs the student on the batch's negatives.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` of each solo run and
of the cohort (in process); on CPU the peak RSS increase (Linux VmHWM, reset
through ``/proc/self/clear_refs``) of a subprocess per configuration, over the
process's RSS once the data and the teacher are loaded.

Writes ``<out>/speed.md`` (the printed table) and ``<out>/speed.json`` (raw
per-repeat times, settings, environment).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from methods import (Batch, HyperparameterError, UnknownMethodError, method_needs,
                     validate_method)

from .config import ConfigError
from .grid import RunSpec, build_student, environment as grid_environment, pick_device, probe
from .data import CIFAR100_MEAN, CIFAR100_STD, DataError, InMemoryData, load_dataset
from .models import UnknownModelError, create_model
from .train import FastPaths, Recipe, StudentRun, freeze, seed_for, teacher_outputs, train_cohort

DEFAULT_METHODS = "vanilla,kd,fitnet,at,rkd,crd,triplet"
DEFAULT_PAIR = "resnet32x4:resnet8x4"
SYNTHETIC_TRAIN = 50_000  # CIFAR-100's training-set size: CRD's memory banks and samplers scale with it
SYNTHETIC_TEST = 256
FULL = {"steps": 20, "warmup": 3, "repeats": 3, "image_size": 32}
QUICK = {"steps": 3, "warmup": 1, "repeats": 3, "image_size": 16}
TARGETS = {"cohort_over_solo": 2.0, "solo_over_plain": 1.0}

def harness_kwargs(fast: dict[str, Any]) -> dict[str, Any]:
    """``train_cohort`` keyword arguments for the resolved fast-path flags (``FastPaths.resolve``).

    The harness (solo and cohort) runs with these; the plain loop always runs fp32, NCHW, eager, with its
    teacher under ``no_grad`` (the RepDistiller way).
    """
    return {"fast": dict(fast)}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- data -----------------------------------------------------------------------

def synthetic_data(num_train: int, size: int, num_classes: int = 100, seed: int = 0,
                   num_test: int = SYNTHETIC_TEST) -> InMemoryData:
    """CIFAR-like uint8 noise images with balanced random labels, made in memory (no download)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (num_train + num_test, 3, size, size), generator=g, dtype=torch.uint8)
    y = (torch.arange(num_train + num_test) % num_classes)[torch.randperm(num_train + num_test, generator=g)]
    return InMemoryData(f"synthetic{size}", x[:num_train].contiguous(), y[:num_train].clone(),
                        x[num_train:].contiguous(), y[num_train:].clone(), num_classes=num_classes,
                        mean=CIFAR100_MEAN, std=CIFAR100_STD, pad=max(1, round(4 * size / 32)), flip=True)


def resized(data: InMemoryData, size: int) -> InMemoryData:
    """The same dataset at ``size`` x ``size`` (bilinear, once), crop padding scaled (4 per 32)."""
    if data.input_shape[1:] == (size, size):
        return data

    def rs(x):
        x = F.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False)
        return x.round().clamp(0, 255).to(torch.uint8)

    return InMemoryData(f"{data.name}@{size}", rs(data.train_images), data.train_labels, rs(data.test_images),
                        data.test_labels, data.num_classes, data.mean, data.std,
                        pad=max(1, round(data.pad * size / data.input_shape[1])), flip=data.flip)


def load_data(args) -> InMemoryData:
    if args.dataset == "synthetic":
        return synthetic_data(args.num_train, args.image_size, seed=args.seed)
    data = load_dataset(args.dataset, data_root=args.data_root)
    if not isinstance(data, InMemoryData):
        raise DataError(f"{args.dataset}: only in-memory datasets (synthetic, digits, cifar10, cifar100) are supported")
    if args.num_train is not None and args.num_train < data.num_train:
        data = InMemoryData(data.name, data.train_images[:args.num_train], data.train_labels[:args.num_train],
                            data.test_images, data.test_labels, data.num_classes, data.mean, data.std,
                            data.pad, data.flip)
    return resized(data, args.image_size) if args.image_size else data


class StepLimited:
    """``data`` whose training epoch stops after ``steps`` batches and whose test set is 2 images.

    ``train_cohort`` then trains exactly ``steps`` steps and its end-of-epoch
    evaluation costs next to nothing (it is outside the timed window anyway).
    """

    def __init__(self, data: InMemoryData, steps: int):
        self._data = data
        self._steps = steps

    def __getattr__(self, name: str):
        return getattr(self._data, name)

    def epoch_batches(self, batch_size, generator, device):
        return itertools.islice(self._data.epoch_batches(batch_size, generator, device), self._steps)

    def test_batches(self, batch_size, device):
        return itertools.islice(self._data.test_batches(2, device), 1)


# --- building runs -----------------------------------------------------------------

class Setup:
    """What every measurement shares: data, frozen teacher, student name, recipe, device."""

    def __init__(self, args, data: InMemoryData, device: torch.device):
        self.args = args
        self.data = data
        self.device = device
        self.teacher_name, self.student_name = args.teacher, args.student
        torch.manual_seed(seed_for(args.seed, "teacher", self.teacher_name))
        self.teacher = freeze(create_model(self.teacher_name, num_classes=data.num_classes).to(device))
        self.teacher_probe = probe(self.teacher, data.input_shape, device, True)
        # train_cohort converts the teacher to channels_last in place when that fast path is on: the plain
        # loop keeps its own NCHW copy
        self.plain_teacher = copy.deepcopy(self.teacher)
        self.recipe = Recipe(epochs=1, batch_size=args.batch_size, lr_decay_epochs=[])
        self.fast = FastPaths(args.amp, args.channels_last, args.teacher_inference_mode,
                              args.compile).resolve(device)

    def build(self, method_name: str):
        """(student, method) exactly as the grid builds them (``grid.build_student``)."""
        spec = RunSpec(method_name, self.teacher_name, self.student_name, self.args.seed)
        return build_student(spec, {}, self.data, self.teacher, self.device, teacher_probe=self.teacher_probe)

    def runs(self, method_names: list[str], recipe: Recipe | None = None) -> list[StudentRun]:
        out = []
        for m in method_names:
            model, method = self.build(m)
            out.append(StudentRun(f"{m}-speed", model, method, recipe or self.recipe, self.args.seed))
        return out


def layout(x: torch.Tensor) -> str:
    """Memory format of a batch: what a conv on it will see."""
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return "channels_last-strided"
    return "contiguous NCHW" if x.is_contiguous() else f"strided {tuple(x.stride())}"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- (b)/(c): kdbench's harness -----------------------------------------------------------

def time_harness(setup: Setup, method_names: list[str], warmup: int, steps: int,
                 batch_size: int | None = None, timers: "Timers | None" = None) -> dict[str, Any]:
    """Seconds for ``steps`` steps (after ``warmup``) of ``method_names`` as one cohort.

    ``timers``: attribute the time to the step's parts (``--breakdown``), by wrapping from outside the
    data, the teacher, each run's model, method and optimizer (``train_cohort`` itself is untouched).
    """
    device = setup.device
    recipe = None if batch_size is None else Recipe(epochs=1, batch_size=batch_size, lr_decay_epochs=[])
    runs = setup.runs(method_names, recipe)
    stamps: list[float] = []
    data = StepLimited(setup.data, warmup + steps)
    if timers is not None:
        data = timers.instrument_harness(data, setup.teacher, runs)

    def on_step():
        sync(device)
        stamps.append(time.perf_counter())
        if timers is not None and len(stamps) == warmup:
            timers.reset()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    t0 = time.perf_counter()
    try:
        train_cohort(runs, data, device, teacher=setup.teacher,
                     data_generator=torch.Generator().manual_seed(seed_for(setup.args.seed, "data")),
                     on_step=on_step, **harness_kwargs(setup.fast))
    finally:
        if timers is not None:
            timers.restore()
    failed = {r.run_id: f"{type(r.error).__name__}: {r.error}" for r in runs if r.error is not None}
    if failed:
        raise RuntimeError(f"harness run failed: {failed}")
    if len(stamps) != warmup + steps:
        raise RuntimeError(f"harness ran {len(stamps)} steps, expected {warmup + steps} (dataset too small?)")
    start = stamps[warmup - 1] if warmup else t0
    out = {"seconds": stamps[-1] - start}
    if device.type == "cuda":
        out["peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def time_shared(setup: Setup, warmup: int, steps: int) -> dict[str, Any]:
    """Seconds for ``steps`` batches (after ``warmup``) of what a cohort does once for all its students:
    draw and augment the batch, and (``teacher``) run the teacher on it, as ``train_cohort`` does
    (same fast paths, same ``no_grad``/``inference_mode`` and clone). No student, no method.

    Returns ``{"data": s, "teacher": s}`` where ``teacher`` excludes the data time.
    """
    device, fast = setup.device, setup.fast
    teacher = setup.teacher
    if fast["channels_last"]:
        teacher.to(memory_format=torch.channels_last)
    preact = any(method_needs(m, "needs_preact") for m in setup.args.method_list)  # as train_cohort decides it
    batches = setup.data.epoch_batches(setup.args.batch_size,
                                       torch.Generator().manual_seed(seed_for(setup.args.seed, "data")), device)
    data_s = teacher_s = 0.0
    for i in range(warmup + steps):
        sync(device)
        t0 = time.perf_counter()
        x = next(batches)[0]
        if fast["channels_last"]:
            x = x.contiguous(memory_format=torch.channels_last)
        sync(device)
        t1 = time.perf_counter()
        teacher_outputs(teacher, x, device, fast, preact)
        sync(device)
        t2 = time.perf_counter()
        if i >= warmup:
            data_s += t1 - t0
            teacher_s += t2 - t1
    return {"data": data_s, "teacher": teacher_s}


# --- (a): the plain RepDistiller-style loop ----------------------------------------------------

class PlainDataset(torch.utils.data.Dataset):
    """A torchvision-``datasets``-style CIFAR over the same uint8 images (HWC numpy, PIL per sample).

    Returns ``(img, target, index)`` (RepDistiller's ``CIFAR100Instance``), plus
    ``neg_img`` when ``negatives`` (the triplet authors' ``KDTripletDataset``: a
    uniform training sample of another class, drawn at every load) and
    ``sample_idx`` when ``contrast_k`` (RepDistiller's
    ``CIFAR100InstanceSample``, mode "exact": the index, then ``k`` negatives
    from ``np.random.choice(cls_negative[target], k, replace=k > pool)``).
    """

    def __init__(self, data: InMemoryData, negatives: bool = False, contrast_k: int | None = None):
        from torchvision import transforms

        size = data.input_shape[1]
        steps = [transforms.RandomCrop(size, padding=data.pad)] if data.pad else []
        if data.flip:
            steps.append(transforms.RandomHorizontalFlip())
        steps += [transforms.ToTensor(), transforms.Normalize(data.mean, data.std)]
        self.transform = transforms.Compose(steps)
        self.data = data.train_images.permute(0, 2, 3, 1).contiguous().numpy()  # (N, H, W, C), as torchvision
        self.targets = data.train_labels.tolist()
        self.negatives = negatives
        self.contrast_k = contrast_k
        if negatives or contrast_k:
            labels = np.asarray(self.targets)
            self.cls_negative = [np.nonzero(labels != c)[0] for c in range(data.num_classes)]

    def __len__(self) -> int:
        return len(self.targets)

    def _image(self, index: int) -> torch.Tensor:
        from PIL import Image

        return self.transform(Image.fromarray(self.data[index]))

    def __getitem__(self, index: int):
        target = self.targets[index]
        out = [self._image(index), target, index]
        if self.negatives:
            out.append(self._image(int(np.random.choice(self.cls_negative[target]))))
        if self.contrast_k:
            pool = self.cls_negative[target]
            neg = np.random.choice(pool, self.contrast_k, replace=self.contrast_k > len(pool))
            out.append(np.hstack((np.asarray([index]), neg)))
        return tuple(out)


def plain_needs(setup: Setup, method) -> dict[str, Any]:
    """What the plain Dataset must supply for ``method``, read off one ``prepare`` on a dummy batch.

    ``extra_index`` -> a negative image per sample; ``contrast_index`` (CRD) ->
    the index and K contrast indices per sample; any other key is drawn in the
    loop by ``prepare`` itself (in-batch sampling costs no data loading).
    """
    n = min(4, setup.data.num_train)
    y = setup.data.train_labels[:n].to(setup.device)
    index = torch.arange(n, device=setup.device)
    drawn = method.prepare(Batch(torch.empty(0), y, index), torch.Generator().manual_seed(0))
    needs = {"negatives": "extra_index" in drawn, "contrast_k": None,
             "prepare": bool(set(drawn) - {"extra_index", "contrast_index"})}
    if "contrast_index" in drawn:
        needs["contrast_k"] = int(drawn["contrast_index"].shape[1]) - 1
    return needs


def time_plain(setup: Setup, method_name: str, warmup: int, steps: int,
               timers: "Timers | None" = None) -> dict[str, Any]:
    """Seconds for ``steps`` steps (after ``warmup``) of the plain loop training ``method_name``."""
    device, args = setup.device, setup.args
    model, method = setup.build(method_name)
    teacher = setup.plain_teacher
    needs = plain_needs(setup, method)
    if timers is not None:
        timers.instrument_models(teacher, model, method)
    dataset = PlainDataset(setup.data, needs["negatives"], needs["contrast_k"])
    workers = args.workers
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.batch_size, shuffle=True, num_workers=workers,
        pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(seed_for(args.seed, "plain")),
        worker_init_fn=_seed_numpy if workers else None)
    params = list(model.parameters()) + [p for p in method.parameters() if p.requires_grad]
    r = setup.recipe
    optimizer = torch.optim.SGD(params, lr=r.lr, momentum=r.momentum, weight_decay=r.weight_decay)
    generator = torch.Generator().manual_seed(seed_for(args.seed, method_name, "method"))
    weights = {"ce": method.ce_weight(), **method.loss_weights()}
    preact = method.needs_preact
    model.train()
    method.train()
    if workers == 0:
        np.random.seed(seed_for(args.seed, "plain-numpy"))
    stamps: list[float] = []
    loss_sum = 0.0
    sync(device)
    t0 = time.perf_counter()
    it = iter(loader)
    for _ in range(warmup + steps):
        try:
            with (timers.section("data") if timers is not None else contextlib.nullcontext()):
                item = next(it)
        except StopIteration:
            raise RuntimeError("the dataset has fewer than warmup + steps batches") from None
        x, y, index = (t.to(device, non_blocking=True) for t in item[:3])
        rest = list(item[3:])
        neg_x = rest.pop(0).to(device, non_blocking=True) if needs["negatives"] else None
        contrast = rest.pop(0).to(device, non_blocking=True) if needs["contrast_k"] else None
        # RepDistiller train_distill: student forward, teacher forward under no_grad, losses, step
        student_out = model.forward_kd(x, preact=preact)
        teacher_out = None
        if method.needs_teacher:
            with torch.no_grad():
                teacher_out = teacher.forward_kd(x, preact=preact)
        batch = Batch(x, y, index)
        if needs["prepare"]:
            batch.extras = method.prepare(batch, generator)
        if neg_x is not None:
            batch.extras["extra_student"] = model.forward_kd(neg_x, preact=preact)
        if contrast is not None:
            batch.extras["contrast_index"] = contrast
        terms = {"ce": F.cross_entropy(student_out.logits, y), **method.losses(student_out, teacher_out, batch)}
        loss = sum(weights[k] * v for k, v in terms.items() if weights[k] != 0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss_sum += loss.item()  # RepDistiller's AverageMeter update
        sync(device)
        stamps.append(time.perf_counter())
        if timers is not None and len(stamps) == warmup:
            timers.reset()
    del it  # shuts the workers down, outside the timed window
    if timers is not None:
        timers.restore()
    start = stamps[warmup - 1] if warmup else t0
    return {"seconds": stamps[-1] - start, "needs": needs}


def _seed_numpy(worker_id: int) -> None:
    np.random.seed(torch.initial_seed() % 2**32)


# --- where the time goes (--breakdown) ------------------------------------------------------

PARTS = ["data", "teacher fwd", "prepare", "student fwd", "extra fetch", "losses", "backward", "optimizer"]


class Timers:
    """Seconds per part of the step, by wrapping callables from outside (CPU: no sync needed; CUDA: synced)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds = {p: 0.0 for p in PARTS}
        self._undo: list[Any] = []
        self._depth = 0

    def reset(self) -> None:
        self.seconds = {p: 0.0 for p in PARTS}

    @contextlib.contextmanager
    def section(self, part: str):
        if self._depth:  # nested (a loss calling backward, ...): counted by the outer part
            yield
            return
        self._depth += 1
        sync(self.device)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            sync(self.device)
            self.seconds[part] += time.perf_counter() - t0
            self._depth -= 1

    @contextlib.contextmanager
    def muted(self):
        """Calls inside count for no part (as if nested in another)."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1

    def _patch(self, obj, attr: str, context) -> None:
        """Run ``obj.attr`` inside ``context()``; ``restore`` undoes it."""
        original = getattr(obj, attr)
        had_own = attr in getattr(obj, "__dict__", {})

        def patched(*a, **k):
            with context():
                return original(*a, **k)

        setattr(obj, attr, patched)
        self._undo.append((obj, attr, original if had_own else None))

    def _wrap(self, obj, attr: str, part: str) -> None:
        self._patch(obj, attr, lambda: self.section(part))

    def _mute(self, obj, attr: str) -> None:
        """The end-of-epoch evaluation is outside the timed window: its teacher pass for the fidelity metrics
        is not a training step's."""
        self._patch(obj, attr, self.muted)

    def instrument_models(self, teacher, model, method) -> None:
        self._wrap(teacher, "forward_kd", "teacher fwd")
        self._wrap(model, "forward_kd", "student fwd")
        self._wrap(method, "prepare", "prepare")
        self._wrap(method, "losses", "losses")
        self._wrap(torch.Tensor, "backward", "backward")
        self._wrap(torch.optim.SGD, "step", "optimizer")

    def instrument_harness(self, data: StepLimited, teacher, runs: list[StudentRun]):
        timers = self

        class Timed(StepLimited):
            def epoch_batches(self, batch_size, generator, device):
                it = StepLimited.epoch_batches(self, batch_size, generator, device)
                while True:
                    with timers.section("data"):
                        batch = next(it, None)
                    if batch is None:
                        return
                    yield batch

            def fetch(self, index, generator, device):
                with timers.section("extra fetch"):
                    return self._data.fetch(index, generator, device)

        self._wrap(teacher, "forward_kd", "teacher fwd")
        for r in runs:
            self._mute(r, "end_epoch")
            self._wrap(r.model, "forward_kd", "student fwd")
            self._wrap(r.method, "prepare", "prepare")
            self._wrap(r.method, "losses", "losses")
        self._wrap(torch.Tensor, "backward", "backward")
        self._wrap(torch.optim.SGD, "step", "optimizer")
        return Timed(data._data, data._steps)

    def restore(self) -> None:
        while self._undo:
            obj, attr, original = self._undo.pop()
            if original is None:
                delattr(obj, attr)
            else:
                setattr(obj, attr, original)


def breakdown(setup: Setup, warmup: int, steps: int) -> list[dict[str, Any]]:
    """ms per step of each part: plain and solo of every method, then the cohort (one measurement each)."""
    rows = []
    for kind, names in [(k, [m]) for m in setup.args.method_list for k in ("plain", "solo")] + \
                       [("cohort", setup.args.method_list)]:
        timers = Timers(setup.device)
        if kind == "plain":
            total = time_plain(setup, names[0], warmup, steps, timers)["seconds"]
        else:
            total = time_harness(setup, names, warmup, steps, timers=timers)["seconds"]
        ms = {p: 1000 * v / steps for p, v in timers.seconds.items()}
        ms["other"] = 1000 * total / steps - sum(ms.values())
        ms["total"] = 1000 * total / steps
        rows.append({"kind": kind, "method": names[0] if kind != "cohort" else f"all {len(names)}", "ms": ms})
        log(f"  breakdown {kind:6s} {rows[-1]['method']:10s} " +
            ", ".join(f"{k} {whole_ms(v)}" for k, v in ms.items()) + " ms/step")
    return rows


def whole_ms(v: float) -> str:
    return f"{v:.0f}" if round(v) else "0"  # no "-0" for a part that is a rounding error below zero


SHARED_PARTS = ("data", "teacher fwd")  # what a cohort does once per batch for all its students


def breakdown_compare(rows: list[dict[str, Any]]) -> dict[str, float] | None:
    """The cohort's step against the solo runs' steps summed, split into the shared parts (batch, teacher
    forward) and the students' own parts (all the rest, 'other' included), in ms per step.

    ``student_cohort_over_solo`` near 1 means the students step as fast in the cohort as alone, so all of the
    cohort's gain comes from the shared parts; below 1, the cohort also makes its students faster.
    """
    solo = [r["ms"] for r in rows if r["kind"] == "solo"]
    cohort = next((r["ms"] for r in rows if r["kind"] == "cohort"), None)
    if cohort is None or not solo:
        return None

    def shared(ms):
        return sum(ms[p] for p in SHARED_PARTS)

    out = {"solo_shared_ms": sum(shared(ms) for ms in solo), "cohort_shared_ms": shared(cohort),
           "solo_student_ms": sum(ms["total"] - shared(ms) for ms in solo),
           "cohort_student_ms": cohort["total"] - shared(cohort)}
    out["student_cohort_over_solo"] = out["cohort_student_ms"] / out["solo_student_ms"]
    out["cohort_over_solo"] = sum(ms["total"] for ms in solo) / cohort["total"]
    return out


def render_breakdown(rows: list[dict[str, Any]]) -> str:
    from tabulate import tabulate

    cols = PARTS + ["other", "total"]
    table = [[r["kind"], r["method"], *(whole_ms(r["ms"][c]) for c in cols)] for r in rows]
    text = ("Where the time goes (ms per step, one measurement each, timed by wrapping the step's parts; "
            "'student fwd' includes the forward on extra samples; 'other' = CE, weighting, the finite check, "
            "bookkeeping, Python):\n\n" + tabulate(table, headers=["kind", "method", *cols], tablefmt="github") + "\n")
    cmp = breakdown_compare(rows)
    if cmp is not None:
        n = sum(r["kind"] == "solo" for r in rows)
        text += (f"\ncohort against the {n} solo runs summed (ms per step): shared parts (batch, teacher forward) "
                 f"{cmp['cohort_shared_ms']:.0f} against {cmp['solo_shared_ms']:.0f}; the students' own parts "
                 f"(everything else) {cmp['cohort_student_ms']:.0f} against {cmp['solo_student_ms']:.0f}, i.e. "
                 f"{cmp['student_cohort_over_solo']:.2f}x their solo time; cohort/solo of this measurement "
                 f"{cmp['cohort_over_solo']:.2f}.\n")
    return text


# --- peak memory -------------------------------------------------------------------

def _read_status(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])  # kB
    except OSError:
        return None
    return None


def memory_probe(args, config: str) -> dict[str, Any]:
    """In this (fresh) process: RSS increase of one configuration ("solo:METHOD" or "cohort")."""
    device = pick_device(args.device)
    setup = Setup(args, load_data(args), device)
    names = args.method_list if config == "cohort" else [config.split(":", 1)[1]]
    steps = max(2, min(3, args.warmup + args.steps))
    # one step at batch 2 first: the process's one-off growth (code pages, thread pools, allocator arenas)
    # lands in the baseline, not in the configuration's increase
    time_harness(setup, names, 0, 1, batch_size=2)
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        reset = True
    except OSError:
        reset = False
    base = _read_status("VmRSS")
    time_harness(setup, names, 0, steps)
    peak = _read_status("VmHWM") if reset else None
    if peak is None or base is None:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux: an upper bound
        base = base or 0
    return {"config": config, "increase_mb": (peak - base) / 1024, "base_mb": base / 1024,
            "peak_mb": peak / 1024, "steps": steps, "vmhwm_reset": reset}


def measure_cpu_memory(args, argv: list[str]) -> dict[str, Any]:
    """One subprocess per configuration (each solo run, the cohort), two at a time (timing is not measured)."""
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(root) + os.pathsep + env.get("PYTHONPATH", "")
    configs = [f"solo:{m}" for m in args.method_list] + ["cohort"]
    pending = list(configs)
    running: list[tuple[str, subprocess.Popen]] = []
    out: dict[str, Any] = {}
    while pending or running:
        while pending and len(running) < 2:
            config = pending.pop(0)
            cmd = [sys.executable, "-m", "benchmarks.speed", *argv, "--memory-probe", config]
            running.append((config, subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE,
                                                     stderr=subprocess.PIPE, text=True)))
        config, proc = running.pop(0)
        stdout, stderr = proc.communicate()
        if proc.returncode != 0:
            log(f"memory probe {config} failed: {(stderr.strip().splitlines() or ['?'])[-1]}")
            out[config] = None
            continue
        out[config] = json.loads(stdout.strip().splitlines()[-1])
        log(f"memory {config}: +{out[config]['increase_mb']:.0f} MB RSS")
    return {c: out[c] for c in configs}


# --- reporting ---------------------------------------------------------------------

def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def fmt(v: float | None, digits: int = 1) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def summarise(args, raw: dict[str, Any]) -> dict[str, Any]:
    """Medians over the repeats of the throughputs and of the per-repeat ratios."""
    B, S = args.batch_size, args.steps
    methods = args.method_list
    M = len(methods)
    rows = {}
    for m in methods:
        plain = [B * S / t for t in raw["plain"][m]]
        solo = [B * S / t for t in raw["solo"][m]]
        rows[m] = {"plain_img_s": statistics.median(plain), "solo_img_s": statistics.median(solo),
                   "solo_over_plain": statistics.median([s / p for s, p in zip(solo, plain)])}
    reps = range(len(raw["cohort"]))
    plain_all = [B * S * M / sum(raw["plain"][m][r] for m in methods) for r in reps]
    solo_all = [B * S * M / sum(raw["solo"][m][r] for m in methods) for r in reps]
    cohort = [B * S * M / raw["cohort"][r] for r in reps]
    overall = {
        "plain_img_s": statistics.median(plain_all),
        "solo_img_s": statistics.median(solo_all),
        "cohort_img_s": statistics.median(cohort),
        "solo_over_plain": statistics.median([s / p for s, p in zip(solo_all, plain_all)]),
        "cohort_over_solo": statistics.median([c / s for c, s in zip(cohort, solo_all)]),
        "cohort_over_plain": statistics.median([c / p for c, p in zip(cohort, plain_all)]),
    }
    if raw.get("shared"):
        overall.update(cohort_bound(args, raw))
    return {"methods": rows, "overall": overall}


def cohort_bound(args, raw: dict[str, Any]) -> dict[str, Any]:
    """What sharing alone can give: the solo runs' total time minus the work a cohort does once instead of
    once per run (M - 1 batch draws, U - 1 teacher forwards, U = the methods that use the teacher), per
    repeat, with the shared parts timed in the same repeat; medians over the repeats.

    ``cohort_over_solo_bound`` = solo time / (solo time - saved): the cohort/solo ratio if the cohort's
    students ran exactly as fast as solo ones. It is what limits the cohort's gain, whatever the loop does.
    """
    methods = args.method_list
    users = sum(method_needs(m, "needs_teacher") for m in methods)
    S = args.steps
    bounds, saved_share, teacher_ms, data_ms = [], [], [], []
    for r, shared in enumerate(raw["shared"]):
        solo = sum(raw["solo"][m][r] for m in methods)
        saved = (len(methods) - 1) * shared["data"] + max(users - 1, 0) * shared["teacher"]
        bounds.append(solo / (solo - saved))
        saved_share.append(saved / solo)
        teacher_ms.append(1000 * shared["teacher"] / S)
        data_ms.append(1000 * shared["data"] / S)
    return {"teacher_forward_ms": statistics.median(teacher_ms), "batch_ms": statistics.median(data_ms),
            "teacher_users": users, "saved_share_of_solo": statistics.median(saved_share),
            "cohort_over_solo_bound": statistics.median(bounds)}


def best_of(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` reduced to the fastest repeat of every configuration (what the machine does unloaded)."""
    out = {"plain": {m: [min(v)] for m, v in raw["plain"].items()},
           "solo": {m: [min(v)] for m, v in raw["solo"].items()}, "cohort": [min(raw["cohort"])]}
    if raw.get("shared"):
        out["shared"] = [{k: min(sh[k] for sh in raw["shared"]) for k in ("data", "teacher")}]
    return out


def render(args, summary, memory, env, reductions, fast, layouts, wall_s) -> str:
    from tabulate import tabulate

    mem_kind = memory["kind"]
    mem_label = {"cuda": "peak CUDA MB", "cpu-rss": "peak RSS +MB", "none": "peak mem"}[mem_kind]
    solo_mem = memory.get("solo", {})
    device_desc = env["device"] + (f" ({env['gpu']})" if "gpu" in env else
                                   f" ({env['cpu_model']}, {env['threads']} threads)")
    lines = [
        "# kdbench training-step speed",
        "",
        f"pair {args.teacher} -> {args.student}; data {args.data_desc}; batch {args.batch_size}; "
        f"{args.steps} timed steps after {args.warmup} warm-up, median of {args.repeats} interleaved repeats; "
        f"device {device_desc}; torch {env['torch']}, python {env['python']}; plain loop: DataLoader "
        f"num_workers={args.workers}.",
        "",
        "harness fast paths: " + ", ".join(f"{k} {'yes' if v is True else 'no' if v is False else v}"
                                        for k, v in fast.items()) + ".",
        "",
        f"input layout: harness batches {layouts['harness']}, model weights {layouts['harness_weights']}; "
        f"plain batches {layouts['plain']}, model weights {layouts['plain_weights']}.",
        "",
    ]
    if reductions:
        lines += ["--quick reduced: " + "; ".join(reductions) + ".", ""]
    rows = []
    for m, r in summary["methods"].items():
        rows.append([m, fmt(r["plain_img_s"]), fmt(r["solo_img_s"]), fmt(r["solo_over_plain"], 2),
                     fmt(solo_mem.get(m), 0)])
    o = summary["overall"]
    rows.append([f"all {len(summary['methods'])} (sum-time)", fmt(o["plain_img_s"]), fmt(o["solo_img_s"]),
                 fmt(o["solo_over_plain"], 2), fmt(max(solo_mem.values()) if solo_mem and None not in
                                                    solo_mem.values() else None, 0)])
    lines.append("Per method: images/s = (training images stepped, per student) x (number of students) / "
                 "wall time; 'all' = the methods run one after another (total images / total time).")
    lines.append("")
    lines.append(tabulate(rows, headers=["method", "plain img/s", "solo img/s", "solo/plain", f"solo {mem_label}"],
                          tablefmt="github"))
    lines += ["", "Cohort vs the same methods run one at a time (images/s as above, over all students):", ""]
    lines.append(tabulate(
        [[fmt(o["plain_img_s"]), fmt(o["solo_img_s"]), fmt(o["cohort_img_s"]), fmt(o["cohort_over_solo"], 2),
          fmt(o["cohort_over_plain"], 2), fmt(max(solo_mem.values()) if solo_mem and None not in
                                               solo_mem.values() else None, 0), fmt(memory.get("cohort"), 0)]],
        headers=["plain (sum-time) img/s", "solo (sum-time) img/s", "cohort img/s", "cohort/solo",
                 "cohort/plain", f"max solo {mem_label}", f"cohort {mem_label}"], tablefmt="github"))
    met_c = o["cohort_over_solo"] >= TARGETS["cohort_over_solo"]
    n_met = sum(r["solo_over_plain"] >= TARGETS["solo_over_plain"] for r in summary["methods"].values())
    lines += ["",
              f"targets: cohort/solo >= {TARGETS['cohort_over_solo']:.1f}: {'met' if met_c else 'NOT met'} "
              f"({o['cohort_over_solo']:.2f}); solo/plain >= {TARGETS['solo_over_plain']:.1f}: met by {n_met} of "
              f"{len(summary['methods'])} methods (all together {o['solo_over_plain']:.2f}).",
              *([f"what sharing can give: the cohort draws the batch once instead of {len(summary['methods'])} "
                 f"times ({o['batch_ms']:.0f} ms each) and runs the teacher once instead of {o['teacher_users']} "
                 f"times ({o['teacher_forward_ms']:.0f} ms per forward, timed alone); that is "
                 f"{100 * o['saved_share_of_solo']:.0f}% of the solo runs' time, so a cohort whose students "
                 f"step as fast as solo ones reaches cohort/solo = {o['cohort_over_solo_bound']:.2f} "
                 f"(measured {o['cohort_over_solo']:.2f})."] if "cohort_over_solo_bound" in o else []),
              f"memory: {memory['note']}",
              f"wall time of the benchmark: {wall_s:.0f} s."]
    return "\n".join(lines) + "\n"


# --- CLI -----------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default=DEFAULT_METHODS, help=f"comma-separated methods (default {DEFAULT_METHODS})")
    p.add_argument("--pair", default=DEFAULT_PAIR, help=f"teacher:student (default {DEFAULT_PAIR})")
    p.add_argument("--dataset", default="synthetic",
                   help="synthetic (default: uint8 noise, 100 classes, made in memory), cifar100, cifar10, digits")
    p.add_argument("--data-root", help="folder holding the dataset (CIFAR: the folder containing cifar-100-python/)")
    p.add_argument("--image-size", type=int, help="image side (default 32, --quick 16); real datasets are resized")
    p.add_argument("--num-train", type=int, help=f"training images (synthetic default {SYNTHETIC_TRAIN}; "
                                                 f"a real dataset is cut to this many)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, help=f"timed steps per measurement (default {FULL['steps']}, "
                                             f"--quick {QUICK['steps']})")
    p.add_argument("--warmup", type=int, help=f"untimed steps first (default {FULL['warmup']}, "
                                              f"--quick {QUICK['warmup']})")
    p.add_argument("--repeats", type=int, help=f"interleaved repetitions, median reported (default "
                                               f"{FULL['repeats']}, --quick {QUICK['repeats']})")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:N")
    p.add_argument("--workers", type=int, help="plain loop DataLoader workers (default: 8 on CUDA; on CPU 0 with "
                                               "<= 2 cores, else 2)")
    p.add_argument("--seed", type=int, default=0)
    fast = p.add_argument_group("harness fast paths (benchmarks.train.FastPaths; auto = on for CUDA, off on CPU; "
                                "the plain loop is always fp32, NCHW, eager)")
    fast.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp32"], help="autocast dtype")
    fast.add_argument("--channels-last", default="auto", choices=["auto", "on", "off"])
    fast.add_argument("--teacher-inference-mode", default="auto", choices=["auto", "on", "off"])
    fast.add_argument("--compile", action="store_true", help="torch.compile every model's forward (opt-in; "
                                                             "give --warmup enough steps to absorb compile time)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")
    p.add_argument("--breakdown", action="store_true",
                   help="then time the parts of the step (data, teacher, student forward, losses, backward, "
                        "optimizer) for every configuration, one more measurement each")
    p.add_argument("--quick", action="store_true",
                   help="reduced sizes for a small CPU (16x16 images, 3 timed steps, 1 warm-up); "
                        "flags given explicitly win")
    p.add_argument("--out", default="results/speed", help="output folder (default results/speed)")
    p.add_argument("--memory-probe", help=argparse.SUPPRESS)  # internal: one configuration in a subprocess
    return p


def resolve(args) -> list[str]:
    """Fill defaults (full or --quick); return the list of reductions --quick made."""
    base = QUICK if args.quick else FULL
    reductions = []
    for key in ("steps", "warmup", "repeats"):
        if getattr(args, key) is None:
            setattr(args, key, base[key])
            if args.quick and base[key] != FULL[key]:
                reductions.append(f"{key} {FULL[key]} -> {base[key]}")
    if args.image_size is None and (args.dataset == "synthetic" or args.quick and args.dataset.startswith("cifar")):
        args.image_size = base["image_size"]
        if args.quick and base["image_size"] != FULL["image_size"]:
            reductions.append(f"images {FULL['image_size']}x{FULL['image_size']} -> "
                              f"{args.image_size}x{args.image_size} (crop padding 4 -> "
                              f"{max(1, round(4 * args.image_size / 32))}; every network, the pair included, "
                              f"unchanged)")
    if args.num_train is None and args.dataset == "synthetic":
        args.num_train = SYNTHETIC_TRAIN
    if args.pair.count(":") != 1:
        raise ConfigError(f"--pair must be teacher:student, got {args.pair!r}")
    args.teacher, args.student = (s.strip() for s in args.pair.split(":"))
    args.method_list = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not args.method_list:
        raise ConfigError("--methods is empty")
    if min(args.steps, args.repeats, args.batch_size) < 1 or args.warmup < 0:
        raise ConfigError("--steps, --repeats and --batch-size must be >= 1, --warmup >= 0")
    return reductions


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _main(argv)
    except (ConfigError, DataError, UnknownModelError, UnknownMethodError, HyperparameterError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    reductions = resolve(args)
    for m in args.method_list:
        validate_method(m)
    for name in (args.teacher, args.student):
        create_model(name)  # raises UnknownModelError listing the known models
    device = pick_device(args.device)
    if args.workers is None:
        # CUDA: RepDistiller's 8. CPU: workers share the cores with the training threads; on 2 cores the
        # plain loop is fastest with none (measured: 0 beats 1 and 2 workers for every method tried)
        args.workers = 8 if device.type == "cuda" else (0 if (os.cpu_count() or 1) <= 2 else 2)
    if args.memory_probe:
        print(json.dumps(memory_probe(args, args.memory_probe)))
        return 0
    t_start = time.perf_counter()
    data = load_data(args)
    if (args.warmup + args.steps) * args.batch_size > data.num_train:
        raise ConfigError(f"{args.warmup + args.steps} steps of {args.batch_size} need more than the "
                         f"{data.num_train} training images")
    c, h, w = data.input_shape
    args.data_desc = f"{args.dataset} {h}x{w} uint8 ({data.num_train} train images, {data.num_classes} classes, " \
                     f"crop pad {data.pad}, flip {'yes' if data.flip else 'no'})"
    env = {**grid_environment(device), "cpu_model": cpu_model()}
    setup = Setup(args, data, device)
    fast = {"device": str(device), **setup.fast}  # what the harness ran with (the plain loop: always fp32 eager)
    x = next(data.epoch_batches(args.batch_size, torch.Generator().manual_seed(0), device))[0]
    cl = bool(fast.get("channels_last"))
    layouts = {"harness": "channels_last (fast path)" if cl else f"{layout(x)} (as its on-device crop leaves them)",
               "harness_weights": "channels_last" if cl else "NCHW",
               "plain": "contiguous NCHW (ToTensor + default collate)", "plain_weights": "NCHW"}
    log(f"speed: {args.teacher} -> {args.student}, {args.data_desc}, methods {', '.join(args.method_list)}, "
        f"{args.repeats} x ({args.warmup} + {args.steps} steps of {args.batch_size}) on {device}")

    # the first steps of a process are slow (lazy initialisation, kernel selection): one untimed pass of
    # every code path (the cohort of all methods, the plain loop) before any measurement
    phases = {"setup": time.perf_counter() - t_start}
    t_phase = time.perf_counter()
    time_harness(setup, args.method_list, 0, 2)
    time_plain(setup, args.method_list[0], 0, 1)
    phases["process_warmup"] = time.perf_counter() - t_phase
    t_phase = time.perf_counter()

    raw: dict[str, Any] = {"plain": {m: [] for m in args.method_list}, "solo": {m: [] for m in args.method_list},
                           "cohort": [], "shared": [], "cuda_peak_mb": {"solo": {}, "cohort": None},
                           "plain_needs": {}}
    B, S = args.batch_size, args.steps
    cycle = [[("plain", m), ("solo", m)] for m in args.method_list] + [[("cohort", None), ("shared", None)]]
    for rep in range(args.repeats):
        # a cyclic schedule, rotated by a fraction of a cycle per repeat (the cohort lands at another place
        # each time, never twice in a row) and plain/solo swapped on odd repeats
        shift = (rep * len(cycle)) // args.repeats
        schedule = [item for group in cycle[shift:] + cycle[:shift]
                    for item in (reversed(group) if rep % 2 else group)]
        for kind, m in schedule:
            if kind == "shared":
                res = time_shared(setup, args.warmup, args.steps)
                raw["shared"].append(res)
                log(f"  repeat {rep + 1}/{args.repeats} shared (batch {1000 * res['data'] / S:.0f} ms + teacher "
                    f"forward {1000 * res['teacher'] / S:.0f} ms per step)")
                continue
            if kind == "plain":
                res = time_plain(setup, m, args.warmup, args.steps)
                raw["plain_needs"][m] = res["needs"]
                n = 1
            else:
                res = time_harness(setup, args.method_list if kind == "cohort" else [m], args.warmup, args.steps)
                n = len(args.method_list) if kind == "cohort" else 1
                if "peak_mb" in res:
                    if kind == "cohort":
                        raw["cuda_peak_mb"]["cohort"] = max(raw["cuda_peak_mb"]["cohort"] or 0, res["peak_mb"])
                    else:
                        raw["cuda_peak_mb"]["solo"][m] = max(raw["cuda_peak_mb"]["solo"].get(m, 0), res["peak_mb"])
            (raw["cohort"] if kind == "cohort" else raw[kind][m]).append(res["seconds"])
            log(f"  repeat {rep + 1}/{args.repeats} {kind:6s} {m or '(all)':10s} "
                f"{B * S * n / res['seconds']:8.1f} img/s")

    phases["measurements"] = time.perf_counter() - t_phase
    t_phase = time.perf_counter()
    if device.type == "cuda":
        memory = {"kind": "cuda", "solo": raw["cuda_peak_mb"]["solo"], "cohort": raw["cuda_peak_mb"]["cohort"],
                  "note": "torch.cuda.max_memory_allocated (MB) during the run, data and teacher included."}
    elif args.no_memory:
        memory = {"kind": "none", "solo": {}, "cohort": None, "note": "not measured (--no-memory)."}
    else:
        probes = measure_cpu_memory(args, argv)
        ok = all(v is not None for v in probes.values())
        memory = {"kind": "cpu-rss" if ok else "none",
                  "solo": {m: probes[f"solo:{m}"]["increase_mb"] for m in args.method_list} if ok else {},
                  "cohort": probes["cohort"]["increase_mb"] if ok else None, "probes": probes,
                  "note": ("peak RSS increase (MB) of a subprocess per configuration over its RSS with the data "
                           "and the teacher loaded and one batch-2 step done (Linux VmHWM reset via "
                           f"/proc/self/clear_refs), {next(iter(probes.values()))['steps']} steps each." if ok else
                           "n/a on CPU: a memory subprocess failed (see the log).")}
    phases["memory"] = time.perf_counter() - t_phase
    summary = summarise(args, raw)
    best = summarise(args, best_of(raw))
    parts = None
    if args.breakdown:
        t_phase = time.perf_counter()
        log("breakdown: one more measurement of each configuration, its parts timed")
        parts = breakdown(setup, args.warmup, args.steps)
        phases["breakdown"] = time.perf_counter() - t_phase
    wall_s = time.perf_counter() - t_start
    text = render(args, summary, memory, env, reductions, fast, layouts, wall_s)
    if parts is not None:
        text += "\n" + render_breakdown(parts)
    print(text, end="")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "speed.md").write_text(text)
    record = {
        "config": {k: getattr(args, k) for k in ("methods", "pair", "teacher", "student", "dataset", "image_size",
                                                  "num_train", "batch_size", "steps", "warmup", "repeats",
                                                  "workers", "seed", "quick")},
        "data": data.describe(),
        "quick_reductions": reductions,
        "fast_paths": fast,
        "input_layouts": layouts,
        "throughput_definition": "images/s = (training images stepped, per student) x (number of students) "
                                 "/ wall time",
        "environment": {**env, "device": str(device)},
        "results": summary,
        "results_best_of_repeats": best,  # the same with the fastest repeat of each time (less load noise)
        "breakdown_ms_per_step": parts,
        "breakdown_cohort_vs_solo": breakdown_compare(parts) if parts is not None else None,
        "targets": TARGETS,
        "memory": memory,
        "raw_seconds": {"plain": raw["plain"], "solo": raw["solo"], "cohort": raw["cohort"],
                        "shared": raw["shared"]},
        "plain_data_needs": raw["plain_needs"],
        "wall_s": wall_s,
        "phases_s": phases,
    }
    (out / "speed.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    log(f"wrote {out / 'speed.md'} and {out / 'speed.json'} ({wall_s:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
