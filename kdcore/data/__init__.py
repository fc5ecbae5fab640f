"""Datasets: digits (embedded default), CIFAR-10/100 (torchvision, from --data-root), MNIST/FashionMNIST (the
idx files in torchvision's, the Debian package's or Zalando's layout: ``idx_data``), ImageFolder.

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

import dataclasses
import inspect
from dataclasses import dataclass, field
import pickle
import sys
import urllib.error
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from kdcore.data.augment import VIEWS
from kdcore.data.common import DataError, folder_contents
from kdcore.data.folder import FolderData
from kdcore.data.idx import load_idx

__all__ = ["DATASETS", "AUGMENTS", "DataError", "InMemoryData", "load_dataset", "list_datasets", "stratified_split",
           "for_students", "with_validation"]

CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)  # RepDistiller dataset/cifar100.py
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
MNIST_MEAN, MNIST_STD = (0.1307,) * 3, (0.3081,) * 3  # the usual MNIST constants (torchvision examples)
FASHION_MEAN, FASHION_STD = (0.2860,) * 3, (0.3530,) * 3
AUGMENTS = ("crop_flip", "crop", "flip", "none")
VAL_SEED = 0  # the validation split's seed: fixed, so every run of every grid holds out the same samples
# the students' subset's seed: fixed (never the student seed), so every run of a grid trains on the same images and
# a paired comparison (method minus vanilla, same seed) sees no subset noise; another value than VAL_SEED so the
# subset is not the validation split's draw repeated
STUDENT_SUBSET_SEED = 1


@dataclass
class InMemoryData:
    name: str
    train_images: torch.Tensor  # uint8 (N, C, H, W)
    train_labels: torch.Tensor  # int64 (N,)
    test_images: torch.Tensor
    test_labels: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    pad: int = 4
    flip: bool = True
    normalize: bool = True
    extra_desc: dict = field(default_factory=dict)  # options that differ from the dataset's default
    val_images: torch.Tensor | None = None  # the validation split (``hold_out``), never trained on
    val_labels: torch.Tensor | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def num_val(self) -> int:
        return 0 if self.val_labels is None else int(self.val_labels.numel())

    def hold_out(self, fraction: float, seed: int = VAL_SEED) -> "InMemoryData":
        """A copy whose training set leaves out a stratified ``fraction`` of it, kept as the validation split.

        Per class, ``round(fraction * n_class)`` samples drawn by a generator seeded with ``seed`` only (never
        the student seed): the same dataset and fraction give the same split in every run, process and
        resume. Both parts keep the dataset's order; normalisation keeps the dataset's constants.
        ``describe()`` gains ``val_fraction`` and ``num_val`` (so a teacher trained here is another teacher).
        """
        if not 0 < fraction < 1:
            raise DataError(f"val_fraction must be in (0, 1) to hold out a split, got {fraction!r}")
        val_index = stratified_split(self.train_labels, fraction, seed)
        keep = torch.ones(self.num_train, dtype=torch.bool)
        keep[val_index] = False
        if not keep.any() or val_index.numel() == 0:
            raise DataError(f"{self.name}: val_fraction {fraction} leaves {int(keep.sum())} training and "
                            f"{val_index.numel()} validation samples; choose a fraction that leaves both")
        return dataclasses.replace(
            self, train_images=self.train_images[keep].contiguous(), train_labels=self.train_labels[keep],
            val_images=self.train_images[val_index].contiguous(), val_labels=self.train_labels[val_index],
            extra_desc={**self.extra_desc, "val_fraction": float(fraction), "num_val": int(val_index.numel())},
            _cache={})

    def student_subset(self, fraction: float, seed: int = STUDENT_SUBSET_SEED) -> "InMemoryData":
        """A copy whose training set keeps only a stratified ``fraction`` of it (``stratified_split``, seeded
        with ``seed`` only): the images the students train on when teachers learn from all of them. The
        validation split (held out before) and the test set stay whole. ``describe()`` gains
        ``student_fraction``; ``num_train`` is the subset's size.
        """
        if not 0 < fraction < 1:
            raise DataError(f"student_fraction must be in (0, 1) to take a subset, got {fraction!r}")
        keep = stratified_split(self.train_labels, fraction, seed)
        if torch.unique(self.train_labels[keep]).numel() < torch.unique(self.train_labels).numel():
            raise DataError(f"{self.name}: student_fraction {fraction} keeps {keep.numel()} of {self.num_train} "
                            f"training samples and leaves a class out; choose a larger fraction")
        return dataclasses.replace(
            self, train_images=self.train_images[keep].contiguous(), train_labels=self.train_labels[keep],
            extra_desc={**self.extra_desc, "student_fraction": float(fraction)}, _cache={})

    @property
    def num_train(self) -> int:
        return int(self.train_labels.numel())

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_images.shape[1:])  # type: ignore[return-value]

    def describe(self) -> dict:
        return {"name": self.name, "num_train": self.num_train, "num_test": int(self.test_labels.numel()),
                "num_classes": self.num_classes, "input_shape": list(self.input_shape),
                "pad": self.pad, "flip": self.flip, "mean": list(self.mean), "std": list(self.std),
                **self.extra_desc}

    def _on(self, device: torch.device) -> dict[str, torch.Tensor]:
        """The tensors on ``device``, moved once and kept (the data lives where training runs)."""
        key = str(device)
        if key not in self._cache:
            c = self.train_images.shape[1]
            self._cache[key] = {
                "train_x": self.train_images.to(device),
                "train_y": self.train_labels.to(device),
                "test_x": self.test_images.to(device),
                "test_y": self.test_labels.to(device),
                "mean": torch.tensor(self.mean, device=device).view(1, c, 1, 1) * 255.0,
                "std": torch.tensor(self.std, device=device).view(1, c, 1, 1) * 255.0,
            }
        return self._cache[key]

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """Per-channel (x - mean) / std; with ``normalize`` off, x / 255 (torchvision's ``ToTensor``)."""
        if not self.normalize:
            return images.float().div(255.0)
        t = self._on(images.device)
        return (images.float() - t["mean"]) / t["std"]

    def crop_flip(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Random crop (zero padding ``pad``) + horizontal flip of uint8 images, batched on their device.

        Draws, in this order, from ``generator``: crop offsets (B, 2) (when ``pad`` > 0) and flip
        bits (B,) (when ``flip``); with neither, nothing is drawn and the images pass unchanged.
        """
        b, _, h, w = images.shape
        device = images.device
        if self.pad > 0:
            offsets = torch.randint(0, 2 * self.pad + 1, (b, 2), generator=generator).to(device)
            padded = F.pad(images, (self.pad,) * 4)
            rows = (offsets[:, 0, None] + torch.arange(h, device=device))[:, :, None]  # (B, H, 1)
            cols = (offsets[:, 1, None] + torch.arange(w, device=device))[:, None, :]  # (B, 1, W)
            batch = torch.arange(b, device=device)[:, None, None]
            images = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)
        if self.flip:
            flips = (torch.rand(b, generator=generator) < 0.5).to(device)
            images = torch.where(flips[:, None, None, None], images.flip(3), images)
        return images

    def augment(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The training augmentation (``crop_flip``), then normalise."""
        return self.normalise(self.crop_flip(images, generator))

    def epoch_batches(
        self, batch_size: int, generator: torch.Generator, device: torch.device
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """One shuffled pass over the training set (last batch kept, as RepDistiller's DataLoader)."""
        t = self._on(device)
        order = torch.randperm(self.num_train, generator=generator)
        for start in range(0, self.num_train, batch_size):
            index = order[start:start + batch_size].to(device)
            yield self.augment(t["train_x"][index], generator), t["train_y"][index], index

    def fetch(self, index: torch.Tensor, generator: torch.Generator, device: torch.device) -> torch.Tensor:
        """Augmented training samples ``index`` (for methods that ask for extra samples)."""
        t = self._on(device)
        return self.augment(t["train_x"][index.to(device)], generator)

    @property
    def views(self) -> tuple[str, ...]:
        """The other views this data produces (``view``)."""
        return tuple(VIEWS)

    def view(self, name: str, index: torch.Tensor, generator: torch.Generator, device: torch.device) -> torch.Tensor:
        """Another view of training samples ``index`` (``augment.VIEWS``: ``"strong"``, MLKD's), normalised."""
        t = self._on(device)
        return self.normalise(VIEWS[name](self.crop_flip, t["train_x"][index.to(device)], generator))

    def test_batches(self, batch_size: int, device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        t = self._on(device)
        for start in range(0, int(self.test_labels.numel()), batch_size):
            yield self.normalise(t["test_x"][start:start + batch_size]), t["test_y"][start:start + batch_size]

    def val_batches(self, batch_size: int, device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The validation split (``hold_out``), as the test set is served: unaugmented, in order."""
        if self.val_labels is None:
            return
        key = f"val:{device}"
        if key not in self._cache:
            self._cache[key] = (self.val_images.to(device), self.val_labels.to(device))
        x, y = self._cache[key]
        for start in range(0, self.num_val, batch_size):
            yield self.normalise(x[start:start + batch_size]), y[start:start + batch_size]


def stratified_split(labels: torch.Tensor, fraction: float, seed: int = VAL_SEED) -> torch.Tensor:
    """Sorted indices of a stratified ``fraction`` of ``labels``: per class (in label order) a seeded random
    ``round(fraction * n_class)`` of its samples."""
    generator = torch.Generator().manual_seed(seed)
    picked = []
    for c in torch.unique(labels).tolist():
        members = torch.nonzero(labels == c).flatten()
        k = int(round(fraction * members.numel()))
        picked.append(members[torch.randperm(members.numel(), generator=generator)[:k]])
    return torch.sort(torch.cat(picked)).values


# --- options shared by every loader --------------------------------------------

def check_options(name: str, augment: str | None, normalize: object) -> None:
    """One clear error for a bad ``augment`` / ``normalize`` value (before any file is read)."""
    if augment is not None and augment not in AUGMENTS:
        raise DataError(f"{name}: data.augment must be one of {', '.join(AUGMENTS)}, got {augment!r}")
    if not isinstance(normalize, bool):
        raise DataError(f"{name}: data.normalize must be true or false, got {normalize!r}")


def with_options(data: InMemoryData, default_augment: str, augment: str | None, normalize: bool) -> InMemoryData:
    """Apply ``augment`` / ``normalize`` to a freshly loaded dataset, recording non-defaults in describe().

    The dataset's own crop padding is kept for the recipes that crop; ``none`` turns both off.
    """
    check_options(data.name, augment, normalize)
    augment = default_augment if augment is None else augment
    if augment != default_augment:
        data.extra_desc["augment"] = augment
        data.flip = augment in ("crop_flip", "flip")
        if augment in ("flip", "none"):
            data.pad = 0
    if not normalize:
        data.normalize = False
        data.extra_desc["normalize"] = False
    return data


# --- loaders ------------------------------------------------------------------

def load_digits(image_size: int = 8, test_fraction: float = 0.25, augment: str | None = None,
                normalize: bool = True, **_: object) -> InMemoryData:
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes), no download.

    Gray levels 0..16 are scaled to 0..255 and repeated on 3 channels so CIFAR
    models run unchanged; ``image_size`` > 8 upsamples (bilinear) once at load.
    The split is stratified and fixed (random_state 0): 1,347 train / 450 test
    at the default fraction. No horizontal flip (a flipped digit is another
    glyph); the crop padding is 1 pixel per 8 (RepDistiller's 4 per 32).
    """
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    check_options("digits", augment, normalize)
    if image_size < 8:
        raise DataError(f"digits: image_size must be >= 8, got {image_size}")
    if not 0 < test_fraction < 1:
        raise DataError(f"digits: data.test_fraction must be in (0, 1) (default 0.25), got {test_fraction}")
    d = sk_digits()
    x = torch.from_numpy(np.round(d.images * (255.0 / 16.0)).astype(np.uint8))[:, None].repeat(1, 3, 1, 1)
    if image_size != 8:
        x = F.interpolate(x.float(), size=(image_size, image_size), mode="bilinear", align_corners=False)
        x = x.round().clamp(0, 255).to(torch.uint8)
    y = torch.from_numpy(d.target.astype(np.int64))
    idx_train, idx_test = train_test_split(
        np.arange(len(y)), test_size=test_fraction, stratify=d.target, random_state=0
    )
    idx_train, idx_test = torch.from_numpy(np.sort(idx_train)), torch.from_numpy(np.sort(idx_test))
    flat = x.float()
    mean = tuple((flat[idx_train].mean(dim=(0, 2, 3)) / 255.0).tolist())
    std = tuple((flat[idx_train].std(dim=(0, 2, 3)) / 255.0).tolist())
    data = InMemoryData("digits", x[idx_train].contiguous(), y[idx_train], x[idx_test].contiguous(), y[idx_test],
                        num_classes=10, mean=mean, std=std, pad=max(1, image_size // 8), flip=False)
    return with_options(data, "crop", augment, normalize)


def _present_files(cls):
    """torchvision's CIFAR class, accepting files that exist (its md5 check is kept for downloads).

    The md5 check would reject any file but the official ones; unreadable or
    wrongly shaped files are still caught when they are parsed and checked.
    """

    class Present(cls):
        def _check_integrity(self) -> bool:
            if getattr(self, "_downloading", False):
                return super()._check_integrity()
            base = Path(self.root) / self.base_folder
            return all((base / name).is_file() for name, _ in self.train_list + self.test_list)

        def _load_meta(self) -> None:
            path = Path(self.root) / self.base_folder / self.meta["filename"]
            if not path.is_file():
                raise RuntimeError("Dataset metadata file not found or corrupted")
            with open(path, "rb") as f:
                self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

        def download(self) -> None:
            self._downloading = True
            try:
                super().download()
            finally:
                self._downloading = False

    return Present


def _download_failed(kind: str, download: bool, error: Exception, root: Path) -> None:
    """A DataError naming the download, not the files, when ``--download`` could not reach the server."""
    if download and isinstance(error, (urllib.error.URLError, ConnectionError, TimeoutError)):
        raise DataError(f"{kind}: --download failed ({type(error).__name__}: {error}); check this machine's internet "
                        f"access, or fetch the dataset elsewhere and extract it under {root}") from None


CIFAR_FORMAT = {
    "cifar10": "torchvision's CIFAR-10 python version: pickled batches data_batch_1..5, test_batch "
               "and batches.meta, each a dict with 'data' (N x 3072 uint8, CHW rows) and 'labels'",
    "cifar100": "torchvision's CIFAR-100 python version: pickled batches train, test and meta, "
                "each a dict with 'data' (N x 3072 uint8, CHW rows) and 'fine_labels'",
}


def _load_cifar(kind: str, data_root: str | Path | None, download: bool) -> InMemoryData:
    from torchvision import datasets

    cls, folder, mean, std, n = {
        "cifar10": (datasets.CIFAR10, "cifar-10-batches-py", CIFAR10_MEAN, CIFAR10_STD, 10),
        "cifar100": (datasets.CIFAR100, "cifar-100-python", CIFAR100_MEAN, CIFAR100_STD, 100),
    }[kind]
    root = Path(data_root or "data").expanduser()
    where = root / folder
    expected = f"expected {CIFAR_FORMAT[kind]} in {where}"
    cls = _present_files(cls)
    try:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=download)
    except RuntimeError as e:
        if "not found" in str(e).lower() or "corrupted" in str(e).lower():
            raise DataError(
                f"{kind}: dataset not found or corrupted under {where}; {expected}, found {folder_contents(where)}. "
                f"Pass --data-root DIR (the folder that contains {folder}/), or add --download to fetch it"
            ) from None
        raise
    except Exception as e:  # unreadable pickles, truncated files
        _download_failed(kind, download, e, root)
        raise DataError(f"{kind}: could not read the files under {where} ({type(e).__name__}: {e}); "
                        f"{expected}, found {folder_contents(where)}") from None

    def as_tensor(ds):
        x = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
        return x, torch.tensor(ds.targets, dtype=torch.int64)

    try:
        tx, ty = as_tensor(train)
        vx, vy = as_tensor(test)
    except Exception as e:  # pickles of the wrong layout
        raise DataError(f"{kind}: the files under {where} are not in the expected layout "
                        f"({type(e).__name__}: {e}); {expected}") from None
    for x, y in ((tx, ty), (vx, vy)):
        if x.shape[1:] != (3, 32, 32) or len(x) != len(y) or int(y.min()) < 0 or int(y.max()) >= n:
            raise DataError(f"{kind}: the files under {where} do not hold {n}-class 32x32 RGB images "
                            f"(found images of shape {tuple(x.shape[1:])}, {len(x)} images, {len(y)} labels "
                            f"in {int(y.min())}..{int(y.max())}); {expected}")
    return InMemoryData(kind, tx, ty, vx, vy, num_classes=n, mean=mean, std=std, pad=4, flip=True)


def load_cifar10(data_root=None, download=False, augment: str | None = None, normalize: bool = True,
                 **_: object) -> InMemoryData:
    check_options("cifar10", augment, normalize)
    return with_options(_load_cifar("cifar10", data_root, download), "crop_flip", augment, normalize)


def load_cifar100(data_root=None, download=False, augment: str | None = None, normalize: bool = True,
                  **_: object) -> InMemoryData:
    check_options("cifar100", augment, normalize)
    return with_options(_load_cifar("cifar100", data_root, download), "crop_flip", augment, normalize)


def _load_mnist(kind: str, data_root, download: bool) -> InMemoryData:
    """MNIST / FashionMNIST from the four idx files in any layout a user has (``idx_data.load_idx``); one line on
    stderr says which folder was read.

    The 28x28 gray images are repeated on 3 channels, as the digits are, so every model of the
    zoo (and torchvision's resnet34, ImageNet weights included) runs on them unchanged; a
    3-channel first conv over three equal channels computes what a 1-channel conv with the
    summed kernel would (the authors' ``Net(input_channels=1)``), with 2x more weights there.
    ``describe()`` gains ``content_sha`` (a hash of the four decompressed files): the same images give the
    same teacher key whichever folder or layout held them, other images another one.
    """
    mean, std = {"MNIST": (MNIST_MEAN, MNIST_STD), "FashionMNIST": (FASHION_MEAN, FASHION_STD)}[kind]
    idx = load_idx(kind, data_root, download)
    print(idx.summary(kind), file=sys.stderr)

    def three_channels(images: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(images)[:, None].repeat(1, 3, 1, 1).contiguous()

    return InMemoryData(kind, three_channels(idx.train_images), torch.from_numpy(idx.train_labels),
                        three_channels(idx.test_images), torch.from_numpy(idx.test_labels), num_classes=10,
                        mean=mean, std=std, pad=4, flip=False, extra_desc={"content_sha": idx.content_sha})


def load_mnist(data_root=None, download=False, augment: str | None = None, normalize: bool = True,
               **_: object) -> InMemoryData:
    check_options("MNIST", augment, normalize)
    return with_options(_load_mnist("MNIST", data_root, download), "crop", augment, normalize)


def load_fashion_mnist(data_root=None, download=False, augment: str | None = None, normalize: bool = True,
                       **_: object) -> InMemoryData:
    check_options("FashionMNIST", augment, normalize)
    return with_options(_load_mnist("FashionMNIST", data_root, download), "crop", augment, normalize)


def load_imagefolder(data_root=None, image_size: int = 224, workers: int = 4, augment: str | None = None,
                     normalize: bool = True, **_: object):
    check_options("imagefolder", augment, normalize)
    return FolderData(data_root, image_size=image_size, workers=workers, augment=augment, normalize=normalize)


DATASETS = {
    "digits": load_digits,
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "imagefolder": load_imagefolder,
    # torchvision's class names (and folder names under --data-root)
    "MNIST": load_mnist,
    "FashionMNIST": load_fashion_mnist,
}


def list_datasets() -> list[str]:
    return list(DATASETS)


def dataset_loader(name: str):
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}") from None


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
