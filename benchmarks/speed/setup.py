"""What every measurement shares: the data (synthetic or real, resized), the step-limited view of it the
harness trains on, and ``Setup`` (frozen teacher, recipe, resolved fast paths, run builder)."""
from __future__ import annotations

import copy
import itertools
import sys

import torch
import torch.nn.functional as F

from kdcore.data import CIFAR100_MEAN, CIFAR100_STD, DataError, InMemoryData, load_dataset
from benchmarks.grid import RunSpec, build_student, probe
from kdcore.models import create_model
from kdcore.train import StudentRun, freeze, seed_for
from kdcore.recipe import FastPaths, Recipe
from benchmarks.speed.options import SpeedOptions

SYNTHETIC_TRAIN = 50_000  # CIFAR-100's training-set size: CRD's memory banks and samplers scale with it
SYNTHETIC_TEST = 256


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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


def load_data(options: SpeedOptions) -> InMemoryData:
    if options.dataset == "synthetic":
        return synthetic_data(options.num_train, options.image_size, seed=options.seed)
    data = load_dataset(options.dataset, data_root=options.data_root)
    if not isinstance(data, InMemoryData):
        raise DataError(f"{options.dataset}: only in-memory datasets (synthetic, digits, cifar10, cifar100) are "
                        f"supported")
    if options.num_train is not None and options.num_train < data.num_train:
        n = options.num_train
        data = InMemoryData(data.name, data.train_images[:n], data.train_labels[:n],
                            data.test_images, data.test_labels, data.num_classes, data.mean, data.std,
                            data.pad, data.flip)
    return resized(data, options.image_size) if options.image_size else data


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


def layout(x: torch.Tensor) -> str:
    """Memory format of a batch: what a conv on it will see."""
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return "channels_last-strided"
    return "contiguous NCHW" if x.is_contiguous() else f"strided {tuple(x.stride())}"


# --- building runs -----------------------------------------------------------------

class Setup:
    """What every measurement shares: data, frozen teacher, student name, recipe, device, and the resolved
    options (``SpeedOptions``) every measurement reads."""

    def __init__(self, options: SpeedOptions, data: InMemoryData, device: torch.device):
        self.options = options
        self.data = data
        self.device = device
        self.teacher_name, self.student_name = options.teacher, options.student
        torch.manual_seed(seed_for(options.seed, "teacher", self.teacher_name))
        self.teacher = freeze(create_model(self.teacher_name, num_classes=data.num_classes).to(device))
        self.teacher_probe = probe(self.teacher, data.input_shape, device, True)
        # train_cohort converts the teacher to channels_last in place when that fast path is on: the plain
        # loop keeps its own NCHW copy
        self.plain_teacher = copy.deepcopy(self.teacher)
        self.recipe = Recipe(epochs=1, batch_size=options.batch_size, lr_decay_epochs=[])
        self.fast = FastPaths(options.amp, options.channels_last, options.teacher_inference_mode,
                              options.compile).resolve(device)

    def build(self, method_name: str):
        """(student, method) exactly as the grid builds them (``grid.build_student``)."""
        spec = RunSpec(method_name, self.teacher_name, self.student_name, self.options.seed)
        return build_student(spec, {}, self.data, self.teacher, self.device, teacher_probe=self.teacher_probe)

    def runs(self, method_names: list[str], recipe: Recipe | None = None) -> list[StudentRun]:
        out = []
        for m in method_names:
            model, method = self.build(m)
            out.append(StudentRun(f"{m}-speed", model, method, recipe or self.recipe, self.options.seed))
        return out
