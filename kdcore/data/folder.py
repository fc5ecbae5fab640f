"""ImageFolder datasets (ImageNet included): ``<data-root>/train/<class>/*`` and ``<data-root>/val/<class>/*``.

Too large to keep in memory, so a multi-worker DataLoader decodes and augments
(ImageNet recipe: RandomResizedCrop + flip for training, resize 1.14x + centre
crop for testing; ``augment`` picks the training transforms: ``crop_flip`` the
ImageNet recipe, ``crop`` without the flip, ``flip`` and ``none`` the test-time
resize + centre crop, with or without the flip; ``normalize=False`` leaves
``ToTensor``'s [0, 1] values). Shuffling draws from the caller's generator; each worker's
augmentation RNG is seeded from it through the DataLoader, so a seed fixes the
stream for a given worker count.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import torch

from kdcore.data.common import IMAGENET_MEAN, IMAGENET_STD, DataError


def _read(ds, i):
    """Sample ``i`` of an ImageFolder; a file PIL cannot decode is a DataError naming it (not a traceback)."""
    try:
        return ds[i]
    except OSError as e:  # PIL's UnidentifiedImageError, truncated files
        raise DataError(f"imagefolder: cannot read image {ds.samples[i][0]} ({type(e).__name__}: {e}); "
                        f"replace or remove the file") from None


class _Checked(torch.utils.data.Dataset):
    def __init__(self, base, indexed: bool):
        self.base, self.indexed = base, indexed

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        x, y = _read(self.base, i)
        return (x, y, i) if self.indexed else (x, y)


class _Indexed(_Checked):  # (x, y, dataset index): the training set's samples (here and per DDP rank)
    def __init__(self, base):
        super().__init__(base, True)


class FolderData:
    def __init__(self, data_root, image_size: int = 224, workers: int = 4, augment: str | None = None,
                 normalize: bool = True):
        from torchvision import datasets, transforms

        root = Path(data_root or "data").expanduser()
        missing = [str(root / s) for s in ("train", "val") if not (root / s).is_dir()]
        if missing:
            raise DataError(f"imagefolder: no folder {' or '.join(missing)}; pass --data-root DIR with "
                            f"DIR/train/<class>/ and DIR/val/<class>/ image folders")
        self.extra_desc = {}
        if augment not in (None, "crop_flip"):
            self.extra_desc["augment"] = augment
        if not normalize:
            self.extra_desc["normalize"] = False
        augment = augment or "crop_flip"
        norm = [transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)] if normalize else []
        centre = [transforms.Resize(int(image_size * 256 / 224)), transforms.CenterCrop(image_size)]
        crop = [transforms.RandomResizedCrop(image_size)] if augment in ("crop_flip", "crop") else centre
        flip = [transforms.RandomHorizontalFlip()] if augment in ("crop_flip", "flip") else []
        try:
            self.train_set = datasets.ImageFolder(str(root / "train"), transforms.Compose(
                crop + flip + [transforms.ToTensor()] + norm))
            self.test_set = datasets.ImageFolder(str(root / "val"), transforms.Compose(
                centre + [transforms.ToTensor()] + norm))
        except FileNotFoundError as e:  # no class folder, or class folders without images
            raise DataError(f"imagefolder: {str(e).rstrip('.')}; pass --data-root DIR with DIR/train/<class>/ and DIR/val/<class>/ "
                            f"image folders") from None
        for ds in (self.train_set, self.test_set):  # one image of each, before any teacher trains
            _read(ds, 0)
        if self.train_set.classes != self.test_set.classes:
            raise DataError(f"imagefolder: train/ and val/ under {root} have different class folders")
        self.name = "imagefolder"
        self.num_classes = len(self.train_set.classes)
        self.train_labels = torch.tensor(self.train_set.targets, dtype=torch.int64)
        self.input_shape = (3, image_size, image_size)
        self.workers = workers
        self.root = root

    @property
    def num_train(self) -> int:
        return len(self.train_set)

    def describe(self) -> dict:
        return {"name": self.name, "root": str(self.root), "num_train": self.num_train,
                "num_test": len(self.test_set), "num_classes": self.num_classes,
                "input_shape": list(self.input_shape), **self.extra_desc}

    def _loader(self, ds, batch_size, generator=None, shuffle=False):
        return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=generator,
                                           num_workers=self.workers, pin_memory=torch.cuda.is_available(),
                                           persistent_workers=False)

    def epoch_batches(self, batch_size, generator, device) -> Iterator:
        for x, y, i in self._loader(_Indexed(self.train_set), batch_size, generator, shuffle=True):
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True), i.to(device)

    def fetch(self, index, generator, device):
        # per-sample decode; seeded so the extra samples' augmentation is reproducible
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        with torch.random.fork_rng(devices=[]):  # torchvision transforms draw from the global RNG
            torch.manual_seed(seed)
            return torch.stack([_read(self.train_set, int(i))[0] for i in index.cpu()]).to(device)

    def test_batches(self, batch_size, device) -> Iterator:
        for x, y in self._loader(_Checked(self.test_set, False), batch_size):
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)
