"""Second views of a batch: the strong augmentation MLKD trains on, on uint8 tensors, from a torch generator.

MLKD (Jin et al., CVPR 2023; Jin-Ying/Multi-Level-Logit-Distillation ``mdistiller/dataset/cifar100.py``,
``get_cifar100_train_transform_strong``) trains on a weak view (random crop 32 with padding 4, horizontal
flip: our ``InMemoryData.augment``) and a strong view of the same images: another, independent crop and
flip, then FixMatch's RandAugment(2, 10):

    two ops drawn with replacement (``random.choices``) from the 14 below, each with a magnitude
    drawn uniformly in its range; then Cutout of side ``v * width``, v ~ U[0, 0.5), centre uniform
    in the image, filled with the colour (125, 123, 114)

    AutoContrast  Brightness [0.05, 0.95]  Color [0.05, 0.95]  Contrast [0.05, 0.95]  Equalize
    Identity  Posterize [4, 8] bits  Rotate [-30, 30] deg  Sharpness [0.05, 0.95]  ShearX [-0.3, 0.3]
    ShearY [-0.3, 0.3]  Solarize [0, 256]  TranslateX [-0.3, 0.3] of the width  TranslateY [-0.3, 0.3]

Their code applies PIL operations image by image with Python's ``random``; ours applies torchvision's
tensor versions of the same operations (designed to match PIL's) image by image, with every draw from
the run's torch generator, so a view is reproducible and a cohort's members that ask for the same
view get the same images. Deviations: the shears and translations use PIL's affine convention
(origin at the top-left corner, nearest neighbour, black fill) through ``grid_sample``; Cutout's
rectangle covers pixels ``x0 .. floor(x1)`` as PIL's ``ImageDraw.rectangle`` (inclusive) does; for
1-channel images Color is the identity (as PIL's on an "L" image) and Cutout fills with 125.

Draws per image, in this order: the two op indices, their two magnitudes, the cutout size and its
centre (x, y).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torchvision.transforms.v2 import functional as TF

__all__ = ["RANDAUGMENT_OPS", "randaugment", "cutout", "affine_pil", "VIEWS"]

CUTOUT_FILL = (125, 123, 114)


def affine_pil(img: torch.Tensor, coeffs: tuple[float, float, float, float, float, float]) -> torch.Tensor:
    """PIL's ``img.transform(size, Image.AFFINE, (a, b, c, d, e, f))`` on a uint8 (C, H, W) tensor: the output
    pixel at (x, y) takes the input at (a x + b y + c, d x + e y + f), pixel centres at +0.5, nearest
    neighbour, black outside."""
    c, h, w = img.shape
    a, b, cc, d, e, f = coeffs
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64) + 0.5, torch.arange(w, dtype=torch.float64) + 0.5,
                            indexing="ij")
    u = a * xs + b * ys + cc
    v = d * xs + e * ys + f
    ui, vi = torch.floor(u).long(), torch.floor(v).long()
    inside = (ui >= 0) & (ui < w) & (vi >= 0) & (vi < h)
    src = img[:, vi.clamp(0, h - 1).to(img.device), ui.clamp(0, w - 1).to(img.device)]
    return torch.where(inside.to(img.device), src, torch.zeros((), dtype=img.dtype, device=img.device))


def _shear_x(img, v):
    return affine_pil(img, (1, v, 0, 0, 1, 0))


def _shear_y(img, v):
    return affine_pil(img, (1, 0, 0, v, 1, 0))


def _translate_x(img, v):
    return affine_pil(img, (1, 0, v * img.shape[2], 0, 1, 0))


def _translate_y(img, v):
    return affine_pil(img, (1, 0, 0, 0, 1, v * img.shape[1]))


def _solarize(img, v):
    # PIL inverts the pixels >= v; above 255 there are none (torchvision refuses such a threshold)
    return img if v > 255 else TF.solarize(img, v)


def _color(img, v):
    return TF.adjust_saturation(img, v) if img.shape[0] == 3 else img


# (name, op(img, v), low, high): FixMatch's list as MLKD's augment_list() has it
RANDAUGMENT_OPS: list[tuple[str, Callable[[torch.Tensor, float], torch.Tensor], float, float]] = [
    ("AutoContrast", lambda img, _: TF.autocontrast(img), 0, 1),
    ("Brightness", TF.adjust_brightness, 0.05, 0.95),
    ("Color", _color, 0.05, 0.95),
    ("Contrast", TF.adjust_contrast, 0.05, 0.95),
    ("Equalize", lambda img, _: TF.equalize(img), 0, 1),
    ("Identity", lambda img, _: img, 0, 1),
    ("Posterize", lambda img, v: TF.posterize(img, max(1, int(v))), 4, 8),
    ("Rotate", lambda img, v: TF.rotate(img, v), -30, 30),
    ("Sharpness", TF.adjust_sharpness, 0.05, 0.95),
    ("ShearX", _shear_x, -0.3, 0.3),
    ("ShearY", _shear_y, -0.3, 0.3),
    ("Solarize", _solarize, 0, 256),
    ("TranslateX", _translate_x, -0.3, 0.3),
    ("TranslateY", _translate_y, -0.3, 0.3),
]


def cutout(img: torch.Tensor, v: float, cx: float, cy: float) -> torch.Tensor:
    """MLKD's ``Cutout(img, v)``: a square of side ``v * width`` around (cx, cy) (clipped), filled grey."""
    c, h, w = img.shape
    if v <= 0:
        return img
    side = v * w
    x0, y0 = int(max(0, cx - side / 2.0)), int(max(0, cy - side / 2.0))
    x1, y1 = min(w, x0 + side), min(h, y0 + side)
    out = img.clone()
    fill = torch.tensor(CUTOUT_FILL[:c] if c == 3 else CUTOUT_FILL[:1], dtype=img.dtype, device=img.device)
    out[:, y0:int(math.floor(y1)) + 1, x0:int(math.floor(x1)) + 1] = fill.view(c, 1, 1)
    return out


def randaugment(images: torch.Tensor, generator: torch.Generator, n: int = 2) -> torch.Tensor:
    """RandAugment(n) then Cutout on each image of a uint8 (B, C, H, W) batch (on any device)."""
    b, _, h, w = images.shape
    ops = torch.randint(0, len(RANDAUGMENT_OPS), (b, n), generator=generator)
    mags = torch.rand(b, n, generator=generator, dtype=torch.float64)
    cut = torch.rand(b, 3, generator=generator, dtype=torch.float64)  # size fraction, centre x, centre y
    out = []
    for i in range(b):
        img = images[i]
        for k in range(n):
            _, op, low, high = RANDAUGMENT_OPS[int(ops[i, k])]
            img = op(img, low + float(high - low) * float(mags[i, k]))
        img = cutout(img, float(cut[i, 0]) * 0.5, float(cut[i, 1]) * w, float(cut[i, 2]) * h)
        out.append(img)
    return torch.stack(out)


def strong_view(crop_flip: Callable[[torch.Tensor, torch.Generator], torch.Tensor], images: torch.Tensor,
                generator: torch.Generator) -> torch.Tensor:
    """MLKD's strong view of uint8 ``images``: the dataset's own crop and flip (fresh draws), then RandAugment."""
    return randaugment(crop_flip(images, generator), generator)


# the views a method may ask for (``Distiller.views``): name -> (crop_flip, uint8 images, generator) -> uint8
VIEWS = {"strong": strong_view}
