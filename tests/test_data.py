"""Datasets: the embedded digits split, the real CIFAR loader on CIFAR-format files, the on-device augmentation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.data import DataError, InMemoryData, load_dataset
from tests.conftest import write_cifar


def test_digits_split_is_fixed_and_stratified():
    d = load_dataset("digits")
    assert (d.num_train, int(d.test_labels.numel())) == (1347, 450)  # 1797 * 0.25 rounded up to the test side
    assert d.train_images.dtype == torch.uint8 and d.input_shape == (3, 8, 8)
    assert d.num_classes == 10 and not d.flip and d.pad == 1
    # stratified: every class holds 25% +- 1 of its images in the test split
    for c in range(10):
        n_test = int((d.test_labels == c).sum())
        n_all = n_test + int((d.train_labels == c).sum())
        assert abs(n_test - n_all * 0.25) <= 1
    again = load_dataset("digits")
    assert torch.equal(again.train_images, d.train_images) and torch.equal(again.test_labels, d.test_labels)
    # gray levels 0..16 scaled to 0..255, identical on the three channels
    assert int(d.train_images.max()) == 255 and torch.equal(d.train_images[:, 0], d.train_images[:, 2])


def test_digits_upsampled():
    d = load_dataset("digits", image_size=16)
    assert d.input_shape == (3, 16, 16) and d.pad == 2


@pytest.mark.parametrize("kind", ["cifar100", "cifar10"])
def test_cifar_loader_reads_cifar_format_files(tmp_path, kind):
    tx, ty, vx, vy = write_cifar(tmp_path, kind, n_train=40, n_test=20)
    d = load_dataset(kind, data_root=tmp_path)
    assert d.num_classes == (100 if kind == "cifar100" else 10)
    assert d.num_train == 40 and d.input_shape == (3, 32, 32)
    # pixels and labels come through unchanged, HWC -> CHW
    assert np.array_equal(d.train_images.permute(0, 2, 3, 1).numpy(), tx)
    assert np.array_equal(d.train_labels.numpy(), ty)
    assert np.array_equal(d.test_images.permute(0, 2, 3, 1).numpy(), vx)
    assert np.array_equal(d.test_labels.numpy(), vy)
    # RepDistiller's normalisation constants
    if kind == "cifar100":
        assert d.mean == (0.5071, 0.4867, 0.4408) and d.std == (0.2675, 0.2565, 0.2761)
    x, y = next(d.test_batches(8, torch.device("cpu")))
    expected = (torch.from_numpy(vx[:8]).permute(0, 3, 1, 2).float() / 255 - torch.tensor(d.mean).view(1, 3, 1, 1)) \
        / torch.tensor(d.std).view(1, 3, 1, 1)
    assert torch.allclose(x, expected, atol=1e-5)


def test_missing_cifar_is_one_clear_error(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset("cifar100", data_root=tmp_path / "nowhere")
    msg = str(e.value)
    assert "nowhere" in msg and "cifar-100-python" in msg and "--download" in msg and "--data-root" in msg


def test_corrupt_cifar_is_one_clear_error(tmp_path):
    write_cifar(tmp_path, "cifar100")
    (tmp_path / "cifar-100-python" / "train").write_bytes(b"\x80\x02truncated")
    with pytest.raises(DataError, match="could not read"):
        load_dataset("cifar100", data_root=tmp_path)


def test_unknown_dataset():
    with pytest.raises(DataError, match="known datasets: digits, cifar10, cifar100, imagefolder"):
        load_dataset("mnist")


def _toy(pad=1, flip=True) -> InMemoryData:
    x = torch.arange(2 * 1 * 3 * 3, dtype=torch.uint8).view(2, 1, 3, 3)
    y = torch.tensor([0, 1])
    return InMemoryData("toy", x, y, x, y, num_classes=2, mean=(0.0,), std=(1 / 255,), pad=pad, flip=flip)


def test_augmentation_crop_and_flip_by_hand():
    d = _toy()
    g = torch.Generator().manual_seed(0)
    # replay the generator's draws to know the offsets and flips it will use
    g_copy = torch.Generator().manual_seed(0)
    offsets = torch.randint(0, 3, (2, 2), generator=g_copy)
    flips = torch.rand(2, generator=g_copy) < 0.5
    out = d.augment(d.train_images, g)  # std 1/255, mean 0: output equals the raw pixel values
    padded = torch.nn.functional.pad(d.train_images.float(), (1, 1, 1, 1))
    for i in range(2):
        r, c = offsets[i].tolist()
        crop = padded[i, :, r:r + 3, c:c + 3]
        if flips[i]:
            crop = crop.flip(2)
        assert torch.equal(out[i], crop)


def test_batches_cover_the_epoch_and_are_seeded():
    d = load_dataset("digits")
    cpu = torch.device("cpu")
    run = lambda seed: list(d.epoch_batches(64, torch.Generator().manual_seed(seed), cpu))  # noqa: E731
    a, b, c = run(0), run(0), run(1)
    idx = torch.cat([i for _, _, i in a])
    assert sorted(idx.tolist()) == list(range(d.num_train))  # every sample once, last batch kept
    assert len(a) == 22 and a[-1][0].shape[0] == 1347 - 21 * 64
    assert all(torch.equal(x1, x2) and torch.equal(i1, i2) for (x1, _, i1), (x2, _, i2) in zip(a, b))
    assert not torch.equal(torch.cat([i for _, _, i in c]), idx)
    assert all(torch.equal(y, d.train_labels[i]) for _, y, i in a)


def _write_image_folder(root, classes=("cat", "dog"), per_class=6, size=20):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / split / c / f"{i}.png")


def test_imagefolder_tree(tmp_path):
    _write_image_folder(tmp_path)
    d = load_dataset("imagefolder", data_root=tmp_path, image_size=16, workers=0)
    assert d.num_classes == 2 and d.num_train == 12 and d.input_shape == (3, 16, 16)
    assert d.train_labels.tolist() == [0] * 6 + [1] * 6  # class folders in sorted order
    g = torch.Generator().manual_seed(0)
    batches = list(d.epoch_batches(5, g, torch.device("cpu")))
    assert [b[0].shape for b in batches] == [(5, 3, 16, 16), (5, 3, 16, 16), (2, 3, 16, 16)]
    assert sorted(torch.cat([i for _, _, i in batches]).tolist()) == list(range(12))
    assert all(torch.equal(y, d.train_labels[i]) for _, y, i in batches)
    x1 = d.fetch(torch.tensor([0, 7]), torch.Generator().manual_seed(1), torch.device("cpu"))
    x2 = d.fetch(torch.tensor([0, 7]), torch.Generator().manual_seed(1), torch.device("cpu"))
    assert x1.shape == (2, 3, 16, 16) and torch.equal(x1, x2)  # seeded augmentation of extra samples
    xs, ys = zip(*d.test_batches(8, torch.device("cpu")))
    assert sum(len(y) for y in ys) == 12 and xs[0].shape[1:] == (3, 16, 16)


def test_imagefolder_missing_split_is_one_clear_error(tmp_path):
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match=r"no folder .*val; pass --data-root DIR with DIR/train/<class>/"):
        load_dataset("imagefolder", data_root=tmp_path)


def test_imagefolder_grid_end_to_end(tmp_path, capsys):
    from benchmarks.run import main

    _write_image_folder(tmp_path / "data")
    code = main(["--dataset", "imagefolder", "--data-root", str(tmp_path / "data"), "--set", "data.image_size=16",
                 "--set", "data.workers=0", "--methods", "kd,triplet", "--pairs", "resnet8:resnet8", "--seeds", "0",
                 "--epochs", "1", "--set", "teacher_train.epochs=1", "--set", "train.batch_size=4",
                 "--results", str(tmp_path / "r"), "--quiet", "--no-report"])
    assert code == 0, capsys.readouterr().err
    from benchmarks import records

    recs = list(records.iter_records(next((tmp_path / "r").glob("digits-imagefolder-*"))))
    assert len(recs) == 2 and all(r["status"] == "complete" and r["dataset"] == "imagefolder" for r in recs)
