"""scikit-learn's bundled 8x8 digits: the embedded default dataset (no download)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from kdcore.data.common import DataError
from kdcore.data.memory import InMemoryData, check_options, with_options
from kdcore.data.registry import register_dataset


@register_dataset("digits", order=10)
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
