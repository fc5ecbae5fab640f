"""Shared fixtures: small CIFAR-format datasets written by the tests themselves."""
from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # tests also run from a checkout that is not pip-installed
    sys.path.insert(0, str(ROOT))

THREADS = min(2, torch.get_num_threads())
torch.set_num_threads(THREADS)
# the runner sizes its threads from the machine's load unless told (kdcore/cpus.py): the tests tell it, so
# two runs one test compares bit for bit never differ by a load change between them
os.environ["OMP_NUM_THREADS"] = str(THREADS)


def write_cifar(root: Path, kind: str = "cifar100", n_train: int = 40, n_test: int = 20, seed: int = 0):
    """Write a tiny dataset in CIFAR's on-disk format: pickled dicts with str keys (the official
    Python-2 pickles load as str keys under torchvision's encoding="latin1"), uint8 rows of 3072 = CHW.

    Returns (train images (N,32,32,3) uint8, train labels, test images, test labels).
    """
    rng = np.random.default_rng(seed)
    classes = 100 if kind == "cifar100" else 10
    label_key = "fine_labels" if kind == "cifar100" else "labels"

    def batch(n):
        x = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
        y = rng.integers(0, classes, size=n).tolist()
        entry = {"data": x.reshape(n, 3072), label_key: y, "filenames": [f"{i}.png".encode() for i in range(n)]}
        if kind == "cifar100":
            entry["coarse_labels"] = [v // 5 for v in y]
        return x.transpose(0, 2, 3, 1), np.array(y), entry

    def dump(path: Path, obj) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            pickle.dump(obj, f, protocol=2)

    if kind == "cifar100":
        base = root / "cifar-100-python"
        tx, ty, entry = batch(n_train)
        dump(base / "train", entry)
        vx, vy, entry = batch(n_test)
        dump(base / "test", entry)
        dump(base / "meta", {"fine_label_names": [f"c{i}" for i in range(100)],
                             "coarse_label_names": [f"s{i}" for i in range(20)]})
    else:
        base = root / "cifar-10-batches-py"
        parts = [batch(n_train // 5) for _ in range(5)]
        for i, (_, _, entry) in enumerate(parts, 1):
            dump(base / f"data_batch_{i}", entry)
        tx = np.concatenate([p[0] for p in parts])
        ty = np.concatenate([p[1] for p in parts])
        vx, vy, entry = batch(n_test)
        dump(base / "test_batch", entry)
        dump(base / "batches.meta", {"label_names": [f"c{i}" for i in range(10)]})
    return tx, ty, vx, vy


@pytest.fixture
def cifar100_root(tmp_path):
    arrays = write_cifar(tmp_path, "cifar100")
    return tmp_path, arrays
