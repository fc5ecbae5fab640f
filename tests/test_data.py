"""Datasets: the embedded digits split, the real CIFAR loader on CIFAR-format files, the on-device augmentation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from kdcore.data import DataError, InMemoryData, load_dataset
from tests.conftest import write_cifar
from tests.test_oki_presets import write_mnist


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
    with pytest.raises(DataError, match="known datasets: digits, cifar10, cifar100, imagefolder, MNIST, FashionMNIST"):
        load_dataset("mnist")


def test_wrong_format_cifar_names_the_expected_format_and_never_advises_deleting(tmp_path):
    """Issue 19: say what format was expected and what was found; no destructive advice."""
    write_cifar(tmp_path, "cifar10")
    base = tmp_path / "cifar-10-batches-py"
    (base / "data_batch_3").write_bytes(b"PNG? not a pickle")
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", data_root=tmp_path)
    msg = str(e.value)
    assert "pickled batches" in msg and "data_batch_1..5" in msg and "found a folder holding" in msg
    assert "delete" not in msg.lower()
    # pickles of the right kind but the wrong shape: the same kind of message
    write_cifar(tmp_path, "cifar10")
    import pickle
    with open(base / "test_batch", "wb") as f:
        pickle.dump({"data": np.zeros((4, 12), np.uint8), "labels": [0, 1, 2, 3]}, f)
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", data_root=tmp_path)
    assert "pickled batches" in str(e.value) and "delete" not in str(e.value).lower()
    # a missing dataset says what was expected and what is there
    with pytest.raises(DataError) as e:
        load_dataset("cifar100", data_root=tmp_path)
    msg = str(e.value)
    assert "pickled batches" in msg and "no such folder" in msg and "delete" not in msg.lower()


@pytest.mark.parametrize("kind", ["MNIST", "FashionMNIST"])
def test_mnist_errors_name_the_expected_format_and_never_advise_deleting(tmp_path, kind):
    with pytest.raises(DataError) as e:
        load_dataset(kind, data_root=tmp_path)
    msg = str(e.value)
    assert "idx" in msg and "train-images-idx3-ubyte" in msg and "--data-root" in msg and "delete" not in msg.lower()
    write_mnist(tmp_path, kind)
    truncated = tmp_path / kind / "raw" / "t10k-images-idx3-ubyte"
    truncated.write_bytes(b"\x00\x00\x08\x03\x00")
    with pytest.raises(DataError) as e:  # every defect's own message: tests/test_idx_data.py
        load_dataset(kind, data_root=tmp_path)
    assert str(e.value) == (f"{kind}: {truncated} holds 5 bytes, fewer than an idx images header (16 bytes: magic "
                            f"0x00000803 and 3 sizes); expected an idx images file")


@pytest.mark.parametrize("kind", ["MNIST", "FashionMNIST"])
def test_mnist_loader_reads_torchvision_raw_files(tmp_path, kind):
    tx, ty, vx, vy = write_mnist(tmp_path, kind, n_train=30, n_test=12)
    d = load_dataset(kind, data_root=tmp_path)
    assert d.name == kind and d.num_classes == 10 and d.num_train == 30 and d.input_shape == (3, 28, 28)
    # gray pixels repeated on three channels, labels unchanged
    for c in range(3):
        assert np.array_equal(d.train_images[:, c].numpy(), tx) and np.array_equal(d.test_images[:, c].numpy(), vx)
    assert np.array_equal(d.train_labels.numpy(), ty) and np.array_equal(d.test_labels.numpy(), vy)
    assert d.pad == 4 and not d.flip  # default: crop only (a flipped glyph is another glyph)
    raw = load_dataset(kind, data_root=tmp_path, augment="none", normalize=False)
    x, y, index = next(raw.epoch_batches(7, torch.Generator().manual_seed(0), torch.device("cpu")))
    assert torch.equal(x, torch.from_numpy(tx)[index][:, None].repeat(1, 3, 1, 1).float() / 255)


# --- the data-pipeline options: augment, normalize -----------------------------

def test_options_none_and_unnormalised_give_raw_pixels_over_255(tmp_path):
    """``augment=none, normalize=false``: batches are ToTensor's values (x / 255, in [0, 1]), no crop, no flip."""
    tx, ty, vx, vy = write_cifar(tmp_path, "cifar10", n_train=40, n_test=20)
    d = load_dataset("cifar10", data_root=tmp_path, augment="none", normalize=False)
    assert (d.pad, d.flip, d.normalize) == (0, False, False)
    raw = torch.from_numpy(tx).permute(0, 3, 1, 2).float() / 255  # CHW, exactly ToTensor
    for x, y, index in d.epoch_batches(16, torch.Generator().manual_seed(3), torch.device("cpu")):
        assert torch.equal(x, raw[index]) and torch.equal(y, torch.from_numpy(ty)[index])
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    extra = d.fetch(torch.tensor([5, 0, 39]), torch.Generator().manual_seed(1), torch.device("cpu"))
    assert torch.equal(extra, raw[[5, 0, 39]])  # extra samples (triplet negatives) too
    xs = torch.cat([x for x, _ in d.test_batches(8, torch.device("cpu"))])
    assert torch.equal(xs, torch.from_numpy(vx).permute(0, 3, 1, 2).float() / 255)
    # ToTensor itself agrees bit for bit
    from torchvision.transforms.functional import to_tensor
    assert torch.equal(to_tensor(tx[0]), raw[0])
    desc = d.describe()
    assert desc["augment"] == "none" and desc["normalize"] is False


def test_options_defaults_keep_todays_pipeline_and_description(tmp_path):
    write_cifar(tmp_path, "cifar10")
    d = load_dataset("cifar10", data_root=tmp_path)
    explicit = load_dataset("cifar10", data_root=tmp_path, augment="crop_flip", normalize=True)
    assert (d.pad, d.flip, d.normalize) == (4, True, True)
    # the description (the record, the teacher cache key) is the same as before the options existed
    assert set(d.describe()) == {"name", "num_train", "num_test", "num_classes", "input_shape", "pad", "flip",
                                 "mean", "std"}
    assert d.describe() == explicit.describe()
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    for (x1, _, i1), (x2, _, i2) in zip(d.epoch_batches(16, g1, torch.device("cpu")),
                                        explicit.epoch_batches(16, g2, torch.device("cpu"))):
        assert torch.equal(x1, x2) and torch.equal(i1, i2)
    assert set(load_dataset("digits").describe()) == set(d.describe())


def test_options_crop_only_and_flip_only():
    d = load_dataset("digits", augment="flip")
    assert (d.pad, d.flip) == (0, True) and d.describe()["augment"] == "flip"
    d = load_dataset("digits", augment="none", normalize=False)
    x, _, index = next(d.epoch_batches(32, torch.Generator().manual_seed(0), torch.device("cpu")))
    assert torch.equal(x, d.train_images[index].float() / 255)
    c = load_dataset("digits", augment="crop")
    assert "augment" not in c.describe()  # digits' default


@pytest.mark.parametrize("opts, match", [({"augment": "random"}, "data.augment must be one of crop_flip, crop, flip, none"),
                                         ({"normalize": "no"}, "data.normalize must be true or false")])
@pytest.mark.parametrize("name", ["digits", "cifar10", "MNIST", "imagefolder"])
def test_options_bad_values_are_one_clear_error(tmp_path, name, opts, match):
    with pytest.raises(DataError, match=match):
        load_dataset(name, data_root=tmp_path, **opts)


def test_options_from_the_command_line(tmp_path, capsys):
    from benchmarks.run import main

    code = main(["--dry-run", "--set", "data.augment=none", "--set", "data.normalize=false"])
    assert code == 0
    code = main(["--methods", "vanilla", "--pairs", "resnet8:resnet8", "--seeds", "0", "--epochs", "1",
                 "--set", "teacher_train.epochs=1", "--set", "data.augment=sideways", "--results", str(tmp_path),
                 "--quiet", "--no-report"])
    assert code == 2 and "data.augment must be one of" in capsys.readouterr().err


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


def test_imagefolder_options(tmp_path):
    _write_image_folder(tmp_path, per_class=2, size=16)
    d = load_dataset("imagefolder", data_root=tmp_path, image_size=16, workers=0, augment="none", normalize=False)
    x, _, index = next(d.epoch_batches(4, torch.Generator().manual_seed(0), torch.device("cpu")))
    from PIL import Image
    from torchvision import transforms
    files = [p for p, _ in d.train_set.samples]
    same = transforms.Compose([transforms.Resize(18), transforms.CenterCrop(16), transforms.ToTensor()])
    assert torch.equal(x, torch.stack([same(Image.open(files[i]).convert("RGB")) for i in index]))
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    assert d.describe()["augment"] == "none" and d.describe()["normalize"] is False


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
                 "--student-fraction", "1", "--results", str(tmp_path / "r"), "--quiet", "--no-report"])
    assert code == 0, capsys.readouterr().err
    from kdcore import records

    recs = list(records.iter_records(next((tmp_path / "r").glob("digits-imagefolder-*"))))
    assert len(recs) == 2 and all(r.status == "complete" and r.dataset == "imagefolder" for r in recs)
