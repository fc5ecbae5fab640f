"""MNIST and FashionMNIST: the four idx files in torchvision's, the Debian package's or Zalando's layout
(``kdcore.data.idx``). The names are torchvision's class names (and its folder names under ``--data-root``)."""
from __future__ import annotations

import sys

import numpy as np
import torch

from kdcore.data.idx import load_idx
from kdcore.data.memory import InMemoryData, check_options, with_options
from kdcore.data.registry import register_dataset

MNIST_MEAN, MNIST_STD = (0.1307,) * 3, (0.3081,) * 3  # the usual MNIST constants (torchvision examples)
FASHION_MEAN, FASHION_STD = (0.2860,) * 3, (0.3530,) * 3


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


@register_dataset("MNIST", order=40)
def load_mnist(data_root=None, download=False, augment: str | None = None, normalize: bool = True,
               **_: object) -> InMemoryData:
    check_options("MNIST", augment, normalize)
    return with_options(_load_mnist("MNIST", data_root, download), "crop", augment, normalize)


@register_dataset("FashionMNIST", order=41)
def load_fashion_mnist(data_root=None, download=False, augment: str | None = None, normalize: bool = True,
                       **_: object) -> InMemoryData:
    check_options("FashionMNIST", augment, normalize)
    return with_options(_load_mnist("FashionMNIST", data_root, download), "crop", augment, normalize)
