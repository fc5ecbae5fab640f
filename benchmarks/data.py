"""Datasets: digits (embedded default), CIFAR-10/100 (torchvision, from --data-root), ImageFolder.

In-memory datasets (digits, CIFAR) keep their uint8 images on the training
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
"""
from __future__ import annotations

from dataclasses import dataclass, field
import pickle
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["DATASETS", "DataError", "InMemoryData", "load_dataset", "list_datasets"]

CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)  # RepDistiller dataset/cifar100.py
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class DataError(RuntimeError):
    """A dataset cannot be loaded; the message says where we looked and what to do."""


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
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def num_train(self) -> int:
        return int(self.train_labels.numel())

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_images.shape[1:])  # type: ignore[return-value]

    def describe(self) -> dict:
        return {"name": self.name, "num_train": self.num_train, "num_test": int(self.test_labels.numel()),
                "num_classes": self.num_classes, "input_shape": list(self.input_shape),
                "pad": self.pad, "flip": self.flip, "mean": list(self.mean), "std": list(self.std)}

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
        t = self._on(images.device)
        return (images.float() - t["mean"]) / t["std"]

    def augment(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Random crop (zero padding ``pad``) + horizontal flip, then normalise; batched on the images' device.

        Draws, in this order, from ``generator``: crop offsets (B, 2) and flip bits (B,).
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
        return self.normalise(images)

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

    def test_batches(self, batch_size: int, device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        t = self._on(device)
        for start in range(0, int(self.test_labels.numel()), batch_size):
            yield self.normalise(t["test_x"][start:start + batch_size]), t["test_y"][start:start + batch_size]


# --- loaders ------------------------------------------------------------------

def load_digits(image_size: int = 8, test_fraction: float = 0.25, **_: object) -> InMemoryData:
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes), no download.

    Gray levels 0..16 are scaled to 0..255 and repeated on 3 channels so CIFAR
    models run unchanged; ``image_size`` > 8 upsamples (bilinear) once at load.
    The split is stratified and fixed (random_state 0): 1,347 train / 450 test
    at the default fraction. No horizontal flip (a flipped digit is another
    glyph); the crop padding is 1 pixel per 8 (RepDistiller's 4 per 32).
    """
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    if image_size < 8:
        raise DataError(f"digits: image_size must be >= 8, got {image_size}")
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
    return InMemoryData("digits", x[idx_train].contiguous(), y[idx_train], x[idx_test].contiguous(), y[idx_test],
                        num_classes=10, mean=mean, std=std, pad=max(1, image_size // 8), flip=False)


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


def _load_cifar(kind: str, data_root: str | Path | None, download: bool) -> InMemoryData:
    from torchvision import datasets

    cls, folder, mean, std, n = {
        "cifar10": (datasets.CIFAR10, "cifar-10-batches-py", CIFAR10_MEAN, CIFAR10_STD, 10),
        "cifar100": (datasets.CIFAR100, "cifar-100-python", CIFAR100_MEAN, CIFAR100_STD, 100),
    }[kind]
    root = Path(data_root or "data").expanduser()
    cls = _present_files(cls)
    try:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=download)
    except RuntimeError as e:
        if "not found" in str(e).lower() or "corrupted" in str(e).lower():
            raise DataError(
                f"{kind}: dataset not found or corrupted under {root / folder}; pass --data-root DIR "
                f"(the folder that contains {folder}/), or add --download to fetch it"
            ) from None
        raise
    except Exception as e:  # unreadable pickles, truncated files
        raise DataError(f"{kind}: could not read {root / folder} ({type(e).__name__}: {e}); "
                        f"delete it and re-fetch with --download") from None

    def as_tensor(ds):
        x = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
        return x, torch.tensor(ds.targets, dtype=torch.int64)

    tx, ty = as_tensor(train)
    vx, vy = as_tensor(test)
    for x, y in ((tx, ty), (vx, vy)):
        if x.shape[1:] != (3, 32, 32) or len(x) != len(y) or int(y.min()) < 0 or int(y.max()) >= n:
            raise DataError(f"{kind}: files under {root / folder} do not hold {n}-class 32x32 RGB images; "
                            f"delete the folder and re-fetch with --download")
    return InMemoryData(kind, tx, ty, vx, vy, num_classes=n, mean=mean, std=std, pad=4, flip=True)


def load_cifar10(data_root=None, download=False, **_: object) -> InMemoryData:
    return _load_cifar("cifar10", data_root, download)


def load_cifar100(data_root=None, download=False, **_: object) -> InMemoryData:
    return _load_cifar("cifar100", data_root, download)


def load_imagefolder(data_root=None, image_size: int = 224, workers: int = 4, **_: object):
    from .folder_data import FolderData

    return FolderData(data_root, image_size=image_size, workers=workers)


DATASETS = {
    "digits": load_digits,
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "imagefolder": load_imagefolder,
}


def list_datasets() -> list[str]:
    return list(DATASETS)


def dataset_loader(name: str):
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}") from None


def load_dataset(name: str, **options) -> InMemoryData:
    return dataset_loader(name)(**options)
