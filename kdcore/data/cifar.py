"""CIFAR-10 and CIFAR-100: torchvision's python version, read from ``--data-root`` (``--download`` fetches it)."""
from __future__ import annotations

import pickle
import urllib.error
from pathlib import Path

import numpy as np
import torch

from kdcore.data.common import DataError, folder_contents
from kdcore.data.memory import InMemoryData, check_options, with_options
from kdcore.data.registry import register_dataset

CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)  # RepDistiller dataset/cifar100.py
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


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


@register_dataset("cifar10", order=20)
def load_cifar10(data_root=None, download=False, augment: str | None = None, normalize: bool = True,
                 **_: object) -> InMemoryData:
    check_options("cifar10", augment, normalize)
    return with_options(_load_cifar("cifar10", data_root, download), "crop_flip", augment, normalize)


@register_dataset("cifar100", order=21)
def load_cifar100(data_root=None, download=False, augment: str | None = None, normalize: bool = True,
                  **_: object) -> InMemoryData:
    check_options("cifar100", augment, normalize)
    return with_options(_load_cifar("cifar100", data_root, download), "crop_flip", augment, normalize)
