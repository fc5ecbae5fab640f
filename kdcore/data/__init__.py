"""Datasets: digits (embedded default), CIFAR-10/100 (torchvision, from --data-root), MNIST/FashionMNIST (the
idx files in torchvision's, the Debian package's or Zalando's layout: ``idx_data``), ImageFolder.

Adding a dataset is one file in this folder: a loader decorated with ``@register_dataset("name")``
(``kdcore.data.registry``; docs/guides/dataset.md). Every module of this package is imported here (sorted by
name), which registers its datasets, as ``methods`` does for methods and ``kdcore.models`` for models; the
infrastructure modules (``augment``, ``common``, ``folder``, ``idx``, ``memory``, ``registry``) hold no dataset.
``list_datasets()`` keeps the built-in names in their usual order (``order=`` on registration, see
``kdcore.data.registry``).

In-memory datasets (digits, CIFAR, MNIST) keep their uint8 images on the training
device and augment whole batches there (airbench-style): RepDistiller's CIFAR
recipe, random crop with 4 pixels of zero padding + horizontal flip +
per-channel normalisation. Every random draw comes from a CPU
``torch.Generator`` the caller owns, so the batch stream is the same on any
device and a seed fixes it completely.

All datasets answer the same small interface used by the harness:
``num_classes``, ``num_train``, ``train_labels`` (CPU int64), ``input_shape``,
``epoch_batches(batch_size, generator, device)`` -> (x, y, index),
``fetch(index, generator, device)`` -> augmented x, and
``test_batches(batch_size, device)`` -> (x, y).

Two ordinary options of every loader (preset ``[data]`` keys, ``--set data.augment=none``):

``augment``: ``"crop_flip"`` (random crop + horizontal flip), ``"crop"``, ``"flip"`` or
    ``"none"`` (the images as stored, torchvision's bare ``ToTensor``); the default is each
    dataset's usual recipe (CIFAR and ImageFolder ``crop_flip``; digits and the MNISTs
    ``crop``: a flipped glyph is another glyph).
``normalize``: ``true`` (default: per-channel mean/std) or ``false``: pixel values / 255,
    in [0, 1], exactly ``ToTensor``.

``describe()`` records each option when it differs from the dataset's default (so the
defaults keep the record layout and teacher cache keys they always had).
"""
from __future__ import annotations

import importlib as _importlib
import inspect
import pkgutil as _pkgutil

from kdcore.data.cifar import CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD
from kdcore.data.common import DataError
from kdcore.data.memory import (AUGMENTS, STUDENT_SUBSET_SEED, VAL_SEED, InMemoryData, check_options, with_options,
                                stratified_split)
from kdcore.data.mnist import FASHION_MEAN, FASHION_STD, MNIST_MEAN, MNIST_STD
from kdcore.data.registry import DATASETS, dataset_loader, list_datasets, register_dataset, unregister_dataset

__all__ = ["DATASETS", "AUGMENTS", "DataError", "InMemoryData", "load_dataset", "list_datasets", "stratified_split",
           "for_students", "with_validation", "register_dataset", "unregister_dataset", "dataset_loader",
           "check_data_options", "check_options", "with_options", "VAL_SEED", "STUDENT_SUBSET_SEED",
           "CIFAR10_MEAN", "CIFAR10_STD", "CIFAR100_MEAN", "CIFAR100_STD", "MNIST_MEAN", "MNIST_STD",
           "FASHION_MEAN", "FASHION_STD"]


# what the runner passes every loader, whatever its dataset (a loader that reads no files ignores them)
RUNNER_OPTIONS = ("data_root", "download")


def check_data_options(name: str, options: dict) -> None:
    """One clear error for a ``[data]`` key the dataset's loader does not take (``--set data.image_size=16`` on
    CIFAR would otherwise be ignored without a word) or a number option of the wrong type, before any file is
    read; the values' ranges are the loader's to check. The runner calls it on the options a user gave for
    this dataset (``benchmarks.run.resolve``)."""
    params = {k: p for k, p in inspect.signature(dataset_loader(name)).parameters.items()
              if p.kind is not p.VAR_KEYWORD and k not in RUNNER_OPTIONS}
    for key, value in options.items():
        if key in RUNNER_OPTIONS:
            continue
        if key not in params:
            raise DataError(f"{name} has no data option {key!r}; its options: {', '.join(params)} "
                            f"(--set data.KEY=VALUE)")
        default = params[key].default
        if type(default) in (int, float) and (isinstance(value, bool) or not isinstance(value, type(default))
                                              and not (type(default) is float and isinstance(value, int))):
            raise DataError(f"{name}: data.{key} must be {'an int' if type(default) is int else 'a number'} "
                            f"(default {default!r}), got {value!r}")


def load_dataset(name: str, **options) -> InMemoryData:
    return dataset_loader(name)(**options)


def with_validation(data, fraction: float):
    """``data`` with a validation split of ``fraction`` held out of its training set (0: ``data`` as it is)."""
    if not fraction:
        return data
    if not isinstance(data, InMemoryData):
        raise DataError(f"{getattr(data, 'name', type(data).__name__)}: a validation split (val_fraction) needs an "
                        f"in-memory dataset (digits, cifar10, cifar100, MNIST, FashionMNIST)")
    return data.hold_out(fraction)


def for_students(data, fraction: float):
    """The data the students train on: ``data`` (fraction 1: the teachers' training set), or a seeded,
    stratified ``fraction`` of its training set (``InMemoryData.student_subset``)."""
    if fraction == 1:
        return data
    if not isinstance(data, InMemoryData):
        raise DataError(f"{getattr(data, 'name', type(data).__name__)}: a student subset (student_fraction "
                        f"{fraction:g}) needs an in-memory dataset (digits, cifar10, cifar100, MNIST, FashionMNIST); "
                        f"pass --student-fraction 1 to train the students on the whole training set")
    return data.student_subset(fraction)


# registration happens on import: every module of this folder is a dataset file, except the infrastructure
# the loaders share
_INFRASTRUCTURE = ("augment", "common", "folder", "idx", "memory", "registry")
for _module in sorted(m.name for m in _pkgutil.iter_modules(__path__)):
    if _module not in _INFRASTRUCTURE:
        _importlib.import_module(f"{__name__}.{_module}")
