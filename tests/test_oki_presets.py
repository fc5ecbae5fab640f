"""The seed paper's experiments as presets (issue 20): oki2020, oki2022 and the digits smoke variant."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np


def write_mnist(root: Path, kind: str = "MNIST", n_train: int = 20, n_test: int = 10, seed: int = 0):
    """Write a tiny dataset in torchvision's MNIST on-disk format: ``<root>/<kind>/raw/`` holding the four
    uncompressed idx files (big-endian magic 0x00000803 / 0x00000801, then the sizes, then uint8 data).

    Returns (train images (N,28,28) uint8, train labels, test images, test labels).
    """
    rng = np.random.default_rng(seed)
    raw = root / kind / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    out = []
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, size=n).astype(np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x803, n, 28, 28) + x.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x801, n) + y.tobytes())
        out += [x, y.astype(np.int64)]
    return tuple(out)
