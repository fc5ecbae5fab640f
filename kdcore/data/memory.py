"""The in-memory dataset (``InMemoryData``) and what every loader shares: the ``augment`` / ``normalize``
options (``check_options``, ``with_options``) and the seeded stratified split (``stratified_split``).

The dataset files (``digits``, ``cifar``, ``mnist``, ...) and the package's ``__init__`` both import from
here; nothing here imports a dataset file, so there is no cycle. Every name is re-exported by ``kdcore.data``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Iterator

import torch
import torch.nn.functional as F

from kdcore.data.augment import VIEWS
from kdcore.data.common import DataError

__all__ = ["AUGMENTS", "VAL_SEED", "STUDENT_SUBSET_SEED", "InMemoryData", "stratified_split", "check_options",
           "with_options"]

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
