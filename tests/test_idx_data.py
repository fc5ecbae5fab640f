"""MNIST / FashionMNIST read from the idx files where a user has them (``kdcore.data.idx``).

Every file here is written by the test (tiny idx files, raw and gzip, in each layout); nothing needs the Debian
package or the network.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import struct
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from kdcore.data import idx as idx_data
from kdcore.data import DataError, load_dataset
from kdcore.models import create_model
from benchmarks.run import main
from benchmarks.teachers import teacher_key
from kdcore.recipe import Recipe

NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
KINDS = ("MNIST", "FashionMNIST")


def idx_bytes(n_train: int = 20, n_test: int = 10, seed: int = 0, side: int = 28) -> dict[str, bytes]:
    """The four uncompressed idx files of a tiny dataset, by name (big-endian magic, sizes, uint8 data)."""
    rng = np.random.default_rng(seed)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, size=(n, side, side), dtype=np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8)  # every class in both splits
        rng.shuffle(y)
        out[f"{prefix}-images-idx3-ubyte"] = struct.pack(">IIII", 0x803, n, side, side) + x.tobytes()
        out[f"{prefix}-labels-idx1-ubyte"] = struct.pack(">II", 0x801, n) + y.tobytes()
    return out


def layout_folder(root: Path, layout: str, kind: str) -> Path:
    """Where ``layout`` keeps the files under ``--data-root root``."""
    return {"torchvision": root / kind / "raw", "debian": root,
            "zalando": root / "data" / ("fashion" if kind == "FashionMNIST" else "mnist")}[layout]


def write_files(folder: Path, files: dict[str, bytes], gz: bool) -> dict[str, Path]:
    """``files`` into ``folder``, each gzip-compressed under its name + ``.gz`` when ``gz``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, data in files.items():
        path = folder / (f"{name}.gz" if gz else name)
        path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
        paths[name] = path
    return paths


def expected_tensors(files: dict[str, bytes]) -> list[torch.Tensor]:
    """What the loader must give for ``files``: uint8 images repeated on 3 channels, int64 labels."""
    out = []
    for prefix in ("train", "t10k"):
        images = np.frombuffer(files[f"{prefix}-images-idx3-ubyte"], np.uint8, offset=16).reshape(-1, 28, 28)
        labels = np.frombuffer(files[f"{prefix}-labels-idx1-ubyte"], np.uint8, offset=8)
        out += [torch.from_numpy(images.copy())[:, None].repeat(1, 3, 1, 1), torch.from_numpy(labels.astype(np.int64))]
    return out


def tensors(data) -> list[torch.Tensor]:
    return [data.train_images, data.train_labels, data.test_images, data.test_labels]


LAYOUT_NAMES = {"torchvision": "torchvision layout", "debian": "Debian package layout",
                "zalando": "Zalando repository layout"}


@pytest.mark.parametrize("kind", KINDS)
def test_every_layout_raw_or_gzip_gives_the_same_tensors_and_description(tmp_path, kind, capsys):
    files = idx_bytes()
    expected = expected_tensors(files)
    descriptions = []
    for layout in LAYOUT_NAMES:
        for gz in (False, True):
            root = tmp_path / f"{layout}-{gz}"
            folder = layout_folder(root, layout, kind)
            write_files(folder, files, gz)
            data = load_dataset(kind, data_root=root)
            got = tensors(data)
            assert [t.dtype for t in got] == [torch.uint8, torch.int64] * 2
            assert all(torch.equal(a, b) for a, b in zip(got, expected)), (layout, gz)
            assert capsys.readouterr().err == (f"{kind}: read {folder.absolute()} ({LAYOUT_NAMES[layout]}; 20 train, "
                                               f"10 test images)\n")
            descriptions.append(data.describe())
    assert all(d == descriptions[0] for d in descriptions)
    # the hash of the four decompressed files, in train images, train labels, test images, test labels order
    assert descriptions[0]["content_sha"] == hashlib.sha256(b"".join(files[n] for n in NAMES)).hexdigest()[:16]


def test_files_are_told_apart_by_their_bytes_not_their_names(tmp_path):
    files = idx_bytes()
    folder = tmp_path / "d"
    folder.mkdir()
    for i, (name, data) in enumerate(files.items()):  # gzip under the plain name, raw under the .gz name
        if i % 2:
            (folder / name).write_bytes(gzip.compress(data))
        else:
            (folder / f"{name}.gz").write_bytes(data)
    data = load_dataset("FashionMNIST", data_root=folder)
    assert all(torch.equal(a, b) for a, b in zip(tensors(data), expected_tensors(files)))


def test_other_content_is_another_description_and_teacher_key(tmp_path):
    files = idx_bytes()
    write_files(tmp_path / "a", files, gz=True)
    changed = dict(files)
    pixels = bytearray(files["t10k-images-idx3-ubyte"])
    pixels[16] ^= 1  # one test pixel
    changed["t10k-images-idx3-ubyte"] = bytes(pixels)
    write_files(tmp_path / "b", changed, gz=True)
    a, b = (load_dataset("FashionMNIST", data_root=tmp_path / n).describe() for n in "ab")
    assert {k: v for k, v in a.items() if k != "content_sha"} == {k: v for k, v in b.items() if k != "content_sha"}
    assert a["content_sha"] != b["content_sha"]
    assert teacher_key(a, "resnet8", Recipe(), 0) != teacher_key(b, "resnet8", Recipe(), 0)


def test_uncompressed_file_is_read_before_its_gz(tmp_path):
    """torchvision's download keeps each .gz beside the file it extracts: the extracted one is read."""
    files = idx_bytes()
    raw = tmp_path / "FashionMNIST" / "raw"
    write_files(raw, files, gz=False)
    write_files(raw, idx_bytes(seed=1), gz=True)  # other images: would show if read
    data = load_dataset("FashionMNIST", data_root=tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(tensors(data), expected_tensors(files)))


# --- the default places (no --data-root) ----------------------------------------

@pytest.fixture
def places(tmp_path, monkeypatch):
    """No --data-root: the working directory's data/ and a package folder, both under tmp_path."""
    monkeypatch.chdir(tmp_path)
    package = tmp_path / "usr" / "share" / "datasets" / "fashion-mnist"
    monkeypatch.setattr(idx_data, "PACKAGE_FOLDERS", {"FashionMNIST": package})
    return package


def test_without_data_root_the_package_folder_is_read_and_said(places, capsys):
    files = idx_bytes()
    write_files(places, files, gz=True)
    data = load_dataset("FashionMNIST")
    assert all(torch.equal(a, b) for a, b in zip(tensors(data), expected_tensors(files)))
    assert capsys.readouterr().err == f"FashionMNIST: read {places} (Debian package layout; 20 train, 10 test images)\n"
    # data/FashionMNIST/raw/ (where --download puts the files) comes first
    other = idx_bytes(n_train=30, seed=2)
    write_files(Path("data/FashionMNIST/raw"), other, gz=False)
    data = load_dataset("FashionMNIST")
    assert all(torch.equal(a, b) for a, b in zip(tensors(data), expected_tensors(other)))
    assert capsys.readouterr().err == (f"FashionMNIST: read {places.parents[3] / 'data/FashionMNIST/raw'} "
                                       f"(torchvision layout; 30 train, 10 test images)\n")


def test_without_data_root_and_no_files_one_line_says_where_it_looked_and_how_to_get_them(places, tmp_path, capsys):
    code = main(["--dataset", "FashionMNIST", "--results", str(tmp_path / "r"), "--methods", "vanilla",
                 "--pairs", "resnet8:resnet8", "--seeds", "0", "--epochs", "1", "--quiet"])
    names = "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte"
    assert code == 2 and capsys.readouterr().err == (
        f"error: FashionMNIST: no dataset files found; looked for the four idx files {names} (each raw or .gz) in "
        f"data/FashionMNIST/raw/ (torchvision layout), {places}/ (Debian package layout); install the Debian package "
        f"(apt-get install dataset-fashion-mnist), or pass --data-root DIR (a folder holding them, or "
        f"DIR/FashionMNIST/raw/), or --data-root DIR --download where there is internet\n")
    assert not (tmp_path / "r").exists()
    with pytest.raises(DataError) as e:  # MNIST has no package: no install advice
        load_dataset("MNIST")
    assert str(e.value) == (f"MNIST: no dataset files found; looked for the four idx files {names} (each raw or "
                            f".gz) in data/MNIST/raw/ (torchvision layout); pass --data-root DIR (a folder holding "
                            f"them, or DIR/MNIST/raw/), or --data-root DIR --download where there is internet")


# --- bad files: one line naming the file, exit 2, nothing written ---------------

def run_bad(tmp_path, capsys, root: Path, kind: str = "FashionMNIST") -> str:
    """The runner on ``root``: exit 2 before any teacher trains, nothing under --results; its one stderr line."""
    results = tmp_path / "results"
    code = main(["--dataset", kind, "--data-root", str(root), "--results", str(results), "--methods", "vanilla",
                 "--pairs", "resnet8:resnet8", "--seeds", "0", "--epochs", "1", "--set", "teacher_train.epochs=1",
                 "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and not results.exists(), err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err.removeprefix("error: ").removesuffix("\n")


def damaged(tmp_path, name: str, data: bytes | None = None, gz: bool = True, edit=None) -> tuple[Path, Path]:
    """A Debian-layout folder of good files but ``name``: ``data`` instead (raw), or its gzip edited by ``edit``."""
    root = tmp_path / "d"
    paths = write_files(root, idx_bytes(), gz)
    if data is not None:
        paths[name].write_bytes(data)
    if edit is not None:
        paths[name].write_bytes(edit(paths[name].read_bytes()))
    return root, paths[name]


def test_truncated_gzip(tmp_path, capsys):
    root, path = damaged(tmp_path, "train-images-idx3-ubyte", edit=lambda b: b[:len(b) // 2])
    assert run_bad(tmp_path, capsys, root) == (
        f"FashionMNIST: {path} is a corrupt or truncated gzip file (EOFError: Compressed file ended before the "
        f"end-of-stream marker was reached); expected a complete gzip of the idx file train-images-idx3-ubyte: "
        f"fetch it again")


def test_gzip_with_a_wrong_checksum(tmp_path, capsys):
    root, path = damaged(tmp_path, "t10k-labels-idx1-ubyte", edit=lambda b: b[:-8] + bytes(4) + b[-4:])
    assert run_bad(tmp_path, capsys, root) == (
        f"FashionMNIST: {path} is a corrupt or truncated gzip file (BadGzipFile: CRC check failed); expected a "
        f"complete gzip of the idx file t10k-labels-idx1-ubyte: fetch it again")


def test_gzip_with_a_corrupt_stream(tmp_path, capsys):
    root, path = damaged(tmp_path, "train-labels-idx1-ubyte", edit=lambda b: b[:10] + b"\xff" * 4 + b[14:])
    assert run_bad(tmp_path, capsys, root) == (
        f"FashionMNIST: {path} is a corrupt or truncated gzip file (error: Error -3 while decompressing data: "
        f"invalid block type); expected a complete gzip of the idx file train-labels-idx1-ubyte: fetch it again")


def test_truncated_raw_images(tmp_path, capsys):
    good = idx_bytes()["train-images-idx3-ubyte"]
    root, path = damaged(tmp_path, "train-images-idx3-ubyte", good[:-100], gz=False)
    assert run_bad(tmp_path, capsys, root) == (
        f"FashionMNIST: {path} holds 15580 bytes after its header, expected 20 x 28 x 28 = 15680 (the sizes its "
        f"header gives): a truncated or damaged file")


def test_bytes_past_what_the_header_announces(tmp_path, capsys):
    good = idx_bytes()["train-labels-idx1-ubyte"]
    root, path = damaged(tmp_path, "train-labels-idx1-ubyte", gzip.compress(good + bytes(3)))
    assert run_bad(tmp_path, capsys, root) == (
        f"FashionMNIST: {path} holds 23 bytes after its header, expected 20 (the sizes its header gives): a "
        f"truncated or damaged file")


def test_a_file_shorter_than_its_header(tmp_path, capsys):
    root, path = damaged(tmp_path, "t10k-images-idx3-ubyte", b"\x00\x00\x08\x03\x00", gz=False)
    assert run_bad(tmp_path, capsys, root, kind="MNIST") == (
        f"MNIST: {path} holds 5 bytes, fewer than an idx images header (16 bytes: magic 0x00000803 and 3 sizes); "
        f"expected an idx images file")


def test_labels_where_images_belong(tmp_path, capsys):
    files = idx_bytes()
    root, path = damaged(tmp_path, "train-images-idx3-ubyte", files["train-labels-idx1-ubyte"], gz=False)
    assert run_bad(tmp_path, capsys, root) == (
        f"FashionMNIST: {path} starts with 0x00000801, expected the idx images magic 0x00000803")


def test_image_and_label_counts_that_disagree(tmp_path, capsys):
    labels = struct.pack(">II", 0x801, 9) + bytes(range(9))
    root, path = damaged(tmp_path, "t10k-labels-idx1-ubyte", labels, gz=False)
    assert run_bad(tmp_path, capsys, root) == (
        f"FashionMNIST: {path} holds 9 labels for the 10 images of {root / 't10k-images-idx3-ubyte'}, expected one "
        f"label per image")


def test_a_label_outside_0_to_9(tmp_path, capsys):
    labels = struct.pack(">II", 0x801, 20) + bytes([1, 2, 3, 10] + [0] * 16)
    root, path = damaged(tmp_path, "train-labels-idx1-ubyte", gzip.compress(labels))
    assert run_bad(tmp_path, capsys, root) == (
        f"FashionMNIST: {path} holds label 10 at index 3, expected labels 0..9")


def test_images_of_another_size(tmp_path, capsys):
    root, path = damaged(tmp_path, "t10k-images-idx3-ubyte", idx_bytes(side=32)["t10k-images-idx3-ubyte"])
    assert run_bad(tmp_path, capsys, root) == f"FashionMNIST: {path} holds 32x32 images, expected 28x28"


def test_three_of_the_four_files(tmp_path, capsys):
    raw = tmp_path / "d" / "FashionMNIST" / "raw"
    write_files(raw, idx_bytes(), gz=True)
    (raw / "t10k-labels-idx1-ubyte.gz").unlink()
    assert run_bad(tmp_path, capsys, tmp_path / "d") == (
        f"FashionMNIST: {raw} holds train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte but not "
        f"t10k-labels-idx1-ubyte (or .gz); expected the four idx files {', '.join(NAMES)} (each raw or .gz) "
        f"together in one folder (torchvision layout)")


def test_files_in_no_layout_name_their_folder(tmp_path, capsys):
    stray = tmp_path / "d" / "fashion-mnist" / "files"
    write_files(stray, idx_bytes(), gz=True)
    root = tmp_path / "d"
    assert run_bad(tmp_path, capsys, root) == (
        f"FashionMNIST: {stray} holds {', '.join(NAMES)}, in none of the layouts under {root} "
        f"({root}/FashionMNIST/raw/ (torchvision layout), {root}/ (Debian package layout), {root}/data/fashion/ "
        f"(Zalando repository layout)); pass --data-root {stray} (a folder holding all four files is read as it is)")


def test_no_files_under_data_root(tmp_path, capsys):
    root = tmp_path / "d"
    root.mkdir()
    (root / "notes.txt").write_text("x")
    assert run_bad(tmp_path, capsys, root, kind="MNIST") == (
        f"MNIST: no dataset files under {root}; looked for the four idx files {', '.join(NAMES)} (each raw or .gz) "
        f"in {root}/MNIST/raw/ (torchvision layout), {root}/ (Debian package layout), {root}/data/mnist/ (Zalando "
        f"repository layout), found a folder holding notes.txt. Pass --data-root DIR with one of these layouts, or "
        f"add --download to fetch it into {root}/MNIST/raw (needs internet)")


def test_good_files_pass_the_runner_checks_and_say_the_folder(tmp_path, capsys):
    """The same command on good files: the dry run reads them, says which folder, and writes nothing."""
    write_files(tmp_path / "d" / "data" / "fashion", idx_bytes(), gz=True)
    results = tmp_path / "results"
    code = main(["--dataset", "FashionMNIST", "--data-root", str(tmp_path / "d"), "--results", str(results),
                 "--methods", "vanilla", "--pairs", "resnet8:resnet8", "--seeds", "0", "--epochs", "1",
                 "--set", "teacher_train.epochs=1", "--student-fraction", "1", "--quiet", "--dry-run"])
    err = capsys.readouterr().err
    assert code == 0 and not results.exists()
    assert err == (f"FashionMNIST: read {tmp_path / 'd' / 'data' / 'fashion'} (Zalando repository layout; 20 train, "
                   f"10 test images)\n")


# --- --download: torchvision's, into <root>/<kind>/raw/ --------------------------

def test_download_fills_torchvision_layout_and_is_read(tmp_path, monkeypatch, capsys):
    import torchvision.datasets.mnist

    files = idx_bytes()
    calls = []

    def fake_download(url, download_root, filename, md5):  # torchvision's: the .gz, then its extraction
        calls.append(filename)
        name = filename.removesuffix(".gz")
        Path(download_root, filename).write_bytes(gzip.compress(files[name]))
        Path(download_root, name).write_bytes(files[name])

    monkeypatch.setattr(torchvision.datasets.mnist, "download_and_extract_archive", fake_download)
    data = load_dataset("MNIST", data_root=tmp_path, download=True)
    assert calls == [f"{n}.gz" for n in NAMES]
    assert all(torch.equal(a, b) for a, b in zip(tensors(data), expected_tensors(files)))
    assert capsys.readouterr().err == (f"MNIST: read {tmp_path / 'MNIST' / 'raw'} (torchvision layout; 20 train, "
                                       f"10 test images)\n")
    calls.clear()  # files in any layout: nothing downloaded
    write_files(tmp_path / "flat", files, gz=True)
    load_dataset("MNIST", data_root=tmp_path / "flat", download=True)
    assert calls == [] and not (tmp_path / "flat" / "MNIST").exists()


def test_download_offline_is_one_line(tmp_path, monkeypatch, capsys):
    import torchvision.datasets.mnist

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torchvision.datasets.mnist, "download_and_extract_archive", offline)
    results = tmp_path / "results"
    code = main(["--dataset", "FashionMNIST", "--data-root", str(tmp_path / "d"), "--download", "--results",
                 str(results), "--methods", "vanilla", "--pairs", "resnet8:resnet8", "--seeds", "0", "--quiet"])
    tried = " ".join(f"Tried {m}, got: <urlopen error [Errno -2] Name or service not known>"
                     for m in torchvision.datasets.mnist.FashionMNIST.mirrors)
    assert code == 2 and not results.exists()
    assert capsys.readouterr().err == (
        f"error: FashionMNIST: --download into {tmp_path / 'd' / 'FashionMNIST' / 'raw'} failed (RuntimeError: "
        f"Error downloading train-images-idx3-ubyte.gz: {tried}); check this machine's internet access, or fetch "
        f"the four files elsewhere and pass --data-root to their folder\n")


def test_a_damaged_download_is_named_by_the_reader(tmp_path, monkeypatch, capsys):
    """torchvision downloads all four files, then fails parsing a damaged one: the reader's line names it."""
    import torchvision.datasets.mnist

    files = idx_bytes()
    files["t10k-images-idx3-ubyte"] = files["t10k-images-idx3-ubyte"][:-28]

    def fake_download(url, download_root, filename, md5):
        Path(download_root, filename.removesuffix(".gz")).write_bytes(files[filename.removesuffix(".gz")])

    monkeypatch.setattr(torchvision.datasets.mnist, "download_and_extract_archive", fake_download)
    with pytest.raises(DataError) as e:
        load_dataset("FashionMNIST", data_root=tmp_path, download=True)
    assert str(e.value) == (f"FashionMNIST: {tmp_path / 'FashionMNIST' / 'raw' / 't10k-images-idx3-ubyte'} holds 7812 "
                            f"bytes after its header, expected 10 x 28 x 28 = 7840 (the sizes its header gives): a "
                            f"truncated or damaged file")


def test_other_images_under_the_same_name_never_reuse_a_run_made_with_an_imported_teacher(tmp_path, capsys):
    """An imported teacher's key is its weights only: the run's identity also carries the images' content_sha, so
    a grid rerun on other files of the same dataset moves the first run's record aside and trains again."""
    torch.manual_seed(0)
    teacher = tmp_path / "teacher.pt"
    torch.save(create_model("resnet8", num_classes=10).state_dict(), teacher)
    results = tmp_path / "results"

    def run(seed: int) -> dict:
        root = tmp_path / f"data{seed}"
        write_files(layout_folder(root, "debian", "FashionMNIST"), idx_bytes(20, 10, seed=seed), gz=True)
        assert main(["--dataset", "FashionMNIST", "--data-root", str(root), "--results", str(results),
                     "--grid", "g", "--methods", "vanilla", "--pairs", "resnet8:resnet8", "--seeds", "0",
                     "--epochs", "1", "--student-fraction", "1", "--teacher-ckpt", f"resnet8={teacher}", "--no-report",
                     "--quiet"]) == 0
        path = results / "g" / "runs" / "vanilla__resnet8-resnet8__s0.json"
        return json.loads(path.read_text())

    first = run(0)
    capsys.readouterr()
    again = run(0)  # the same files: the run is complete, not redone
    assert again == first and "grid g: 1 run, 1 already complete, 0 to run" in capsys.readouterr().err
    other = run(1)  # other images, same name, same teacher file: not this grid's run any more
    assert other["config"]["fingerprint"] != first["config"]["fingerprint"]
    err = capsys.readouterr().err
    assert "record made with another configuration; moved to" in err and "1 already complete" not in err
    stale = list((results / "g" / "runs" / "stale").glob("*/vanilla__resnet8-resnet8__s0.json"))
    assert len(stale) == 1 and json.loads(stale[0].read_text())["config"]["fingerprint"] == \
        first["config"]["fingerprint"]
