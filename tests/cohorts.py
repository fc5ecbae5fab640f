"""Small cohorts on a slice of digits: the one way the tests build and train runs to compare a cohort with
solo runs (bitwise). Runs are built by ``benchmarks.grid.build_student``, as the grid builds them."""
from __future__ import annotations

import importlib.util

import torch

from kdcore.data import InMemoryData, load_dataset
from benchmarks.grid import RunSpec, build_student
from kdcore.models import create_model
from kdcore.train import StudentRun, draw_views, freeze, seed_for, train_cohort
from kdcore.recipe import FastPaths, Recipe

CPU = torch.device("cpu")


def digits_slice(n: int = 160, flip: bool = False) -> InMemoryData:
    """The first ``n`` training digits and 64 test digits, crop padding 1."""
    d = load_dataset("digits")
    return InMemoryData("digits-slice", d.train_images[:n], d.train_labels[:n], d.test_images[:64],
                        d.test_labels[:64], 10, d.mean, d.std, pad=1, flip=flip)


def random_teacher() -> torch.nn.Module:
    torch.manual_seed(0)
    return freeze(create_model("resnet8", num_classes=10))


def make_run(method: str, data, teacher, seed: int = 0, epochs: int = 2, overrides=None) -> StudentRun:
    """A resnet8 student with ``method`` (batch 32, lr x0.1 after the first epoch)."""
    model, built = build_student(RunSpec(method, "resnet8", "resnet8", seed), overrides or {}, data, teacher, CPU)
    return StudentRun(f"{method}-s{seed}", model, built, Recipe(epochs=epochs, batch_size=32, lr_decay_epochs=[1]),
                      seed)


def train(runs, data, teacher, seed: int = 0, generator=None, on_epoch_end=None, step_timer=None):
    gen = generator or torch.Generator().manual_seed(seed_for(seed, "data"))
    return train_cohort(runs, data, CPU, teacher=teacher, data_generator=gen, on_epoch_end=on_epoch_end,
                        step_timer=step_timer)


def step_each_stage(run: StudentRun, x, y, index, teacher_out, data, teacher):
    """One step at the start of the run's first pre-training stage (if it has one), then one in its main stage,
    each with the views it declares drawn as ``train_cohort`` draws them; yields (stage or None, loss)."""
    for epoch in sorted({0, run.stage_epochs}):
        run.begin_epoch(epoch)
        views = draw_views([run], index, data, CPU, epoch, 0, teacher, FastPaths().resolve(CPU), True, False)
        yield run.stage_at(epoch)[0], run.step(x, y, index, teacher_out, data, CPU, epoch, 0, views.get(run.seed))


def import_file(path, name: str):
    """The Python file at ``path`` imported as module ``name`` (a guide's example, a docs hook), run once:
    whatever it registers is registered from now on (callers undo that)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
