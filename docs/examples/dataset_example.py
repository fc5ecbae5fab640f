"""A dataset in one file: two Gaussian blobs drawn as 3x8x8 images ("blobs").

Class 0 is a cloud of images around a dark gray, class 1 around a light gray; each pixel adds its own
Gaussian noise. Put this file in ``kdcore/data/`` (it is found there: no list to edit) and run
``python -m benchmarks.run --dataset blobs``; ``--set data.num_train=512`` sets an option.
"""
from __future__ import annotations

import torch

from kdcore.data import InMemoryData, check_options, register_dataset, with_options


@register_dataset("blobs")
def load_blobs(num_train: int = 256, num_test: int = 128, spread: float = 40.0, seed: int = 0,
               augment: str | None = None, normalize: bool = True, **_: object) -> InMemoryData:
    """``num_train`` / ``num_test`` images, half of each class, drawn by a generator seeded with ``seed``:
    the same options give the same images in every run. ``spread`` is the pixel noise's standard deviation
    (0..255 scale). The runner's ``data_root`` and ``download`` land in ``**_``: nothing is read from disk."""
    check_options("blobs", augment, normalize)  # a bad augment / normalize fails before any work
    generator = torch.Generator().manual_seed(seed)
    centres = torch.tensor([96.0, 160.0])  # the two blobs' gray levels

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(n) % 2
        noise = torch.randn(n, 3, 8, 8, generator=generator) * spread
        images = (centres[labels].view(n, 1, 1, 1) + noise).round().clamp(0, 255).to(torch.uint8)
        return images, labels

    train_x, train_y = draw(num_train)
    test_x, test_y = draw(num_test)
    # normalisation constants from the training images, per channel, on the [0, 1] scale (as load_digits does)
    mean = tuple((train_x.float().mean(dim=(0, 2, 3)) / 255.0).tolist())
    std = tuple((train_x.float().std(dim=(0, 2, 3)) / 255.0).tolist())
    # describe() (``extra_desc``) must tell other images apart: it keys the teacher cache, so an option that
    # changes the images is recorded there (num_train / num_test are recorded anyway)
    data = InMemoryData("blobs", train_x, train_y, test_x, test_y, num_classes=2, mean=mean, std=std,
                        pad=1, flip=True, extra_desc={"spread": spread, "seed": seed})
    return with_options(data, "crop_flip", augment, normalize)  # this dataset's default recipe: crop_flip
