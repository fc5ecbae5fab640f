"""MNIST and FashionMNIST: the four idx files found where a user has them, read and checked with numpy.

Layouts under ``--data-root DIR`` (each file raw or gzip-compressed, told apart by its first two bytes, never by
its name): torchvision's ``DIR/<kind>/raw/`` (where ``--download`` puts them), the Debian package's (the four
files directly in DIR) and Zalando's repository (``DIR/data/fashion``; ``DIR/data/mnist`` for MNIST). Without
``--data-root``: ``data/<kind>/raw/`` (torchvision's layout under the working directory, the default download
folder), then the Debian package's folder (``PACKAGE_FOLDERS``). A ``.gz`` is decompressed in memory: nothing is
ever written, except by ``--download``, which is torchvision's.

The idx format: a big-endian uint32 magic (``0x00000803`` images, ``0x00000801`` labels), one big-endian uint32
per dimension (count, then rows and columns for images), then the uint8 values, nothing after them. Every
defect (wrong layout, corrupt or truncated gzip, wrong magic, a payload shorter or longer than its header
says, images other than 28x28, labels outside 0..9, image and label counts that disagree) is one DataError
naming the file and what was expected.
"""
from __future__ import annotations

import gzip
import hashlib
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdcore.data.common import DataError, folder_contents

# the four files, by role, with torchvision's / LeCun's / Zalando's names (a ".gz" may follow)
IDX_NAMES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
             "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801  # uint8 data, 3 dimensions / 1 dimension
GZIP_MAGIC = b"\x1f\x8b"
IMAGE_SIDE = 28
NUM_CLASSES = 10
# without --data-root: torchvision's layout under this folder (relative: the working directory's), then the
# package folder; module constants so tests can point the search elsewhere
DEFAULT_ROOT = Path("data")
PACKAGE_FOLDERS = {"FashionMNIST": Path("/usr/share/datasets/fashion-mnist")}
PACKAGE_NAMES = {"FashionMNIST": "dataset-fashion-mnist"}
REPOSITORY_FOLDERS = {"FashionMNIST": Path("data/fashion"), "MNIST": Path("data/mnist")}  # Zalando's repository
TORCHVISION, DEBIAN, ZALANDO = "torchvision layout", "Debian package layout", "Zalando repository layout"
STRAY_SEARCH_LIMIT = 200  # folders looked into under --data-root for misplaced files (a big DIR stays quick)


@dataclass(frozen=True)
class Place:
    """A folder that may hold the four files, and the layout it stands for."""
    folder: Path
    layout: str


@dataclass
class IdxDataset:
    """The four files' contents (uint8 images (N, 28, 28), int64 labels), where they were read and a hash of them."""
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    place: Place
    content_sha: str  # sha256 of the four decompressed files, in IDX_NAMES order: the same in every layout

    def summary(self, kind: str) -> str:
        """The line a load prints: which folder was read, in which layout, how many images."""
        return (f"{kind}: read {self.place.folder.absolute()} ({self.place.layout}; {len(self.train_labels)} train, "
                f"{len(self.test_labels)} test images)")


def places(kind: str, data_root: str | Path | None) -> list[Place]:
    """Where the files are looked for, in order: every layout under ``data_root``, or the default places."""
    if data_root is None:
        out = [Place(DEFAULT_ROOT / kind / "raw", TORCHVISION)]
        if kind in PACKAGE_FOLDERS:
            out.append(Place(PACKAGE_FOLDERS[kind], DEBIAN))
        return out
    root = Path(data_root).expanduser()
    out = [Place(root / kind / "raw", TORCHVISION), Place(root, DEBIAN)]
    if kind in REPOSITORY_FOLDERS:
        out.append(Place(root / REPOSITORY_FOLDERS[kind], ZALANDO))
    return out


def files_in(folder: Path) -> dict[str, Path]:
    """The idx files ``folder`` holds, by role: the uncompressed name where both are there (torchvision's
    download keeps the ``.gz`` beside what it extracts), else the ``.gz``."""
    found = {}
    for role, name in IDX_NAMES.items():
        for path in (folder / name, folder / f"{name}.gz"):
            if path.is_file():
                found[role] = path
                break
    return found


def find(kind: str, data_root: str | Path | None) -> tuple[Place, dict[str, Path]] | None:
    """The first place holding all four files, or None."""
    for place in places(kind, data_root):
        found = files_in(place.folder)
        if len(found) == len(IDX_NAMES):
            return place, found
    return None


def _names(roles) -> str:
    return ", ".join(IDX_NAMES[r] for r in roles)


def _stray(root: Path) -> tuple[Path, dict[str, Path]] | None:
    """A folder below ``root`` (outside the layouts) holding some of the files, breadth first, or None."""
    queue, seen = [root], 0
    while queue and seen < STRAY_SEARCH_LIMIT:
        folder = queue.pop(0)
        seen += 1
        found = files_in(folder)
        if found:
            return folder, found
        try:
            queue += sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        except OSError:
            continue
    return None


def not_found(kind: str, data_root: str | Path | None) -> DataError:
    """What is wrong when no place holds all four files, and what to do: one line."""
    looked = places(kind, data_root)
    expected = f"the four idx files {', '.join(IDX_NAMES.values())} (each raw or .gz)"
    for place in looked:
        found = files_in(place.folder)
        if found:
            missing = [r for r in IDX_NAMES if r not in found]
            return DataError(f"{kind}: {place.folder} holds {_names(found)} but not {_names(missing)} (or .gz); "
                             f"expected {expected} together in one folder ({place.layout})")
    where = ", ".join(f"{p.folder}/ ({p.layout})" for p in looked)
    if data_root is None:
        package = (f"install the Debian package (apt-get install {PACKAGE_NAMES[kind]}), or "
                   if kind in PACKAGE_NAMES else "")
        return DataError(f"{kind}: no dataset files found; looked for {expected} in {where}; {package}pass "
                         f"--data-root DIR (a folder holding them, or DIR/{kind}/raw/), or --data-root DIR "
                         f"--download where there is internet")
    root = Path(data_root).expanduser()
    stray = _stray(root) if root.is_dir() else None
    if stray is not None:
        folder, found = stray
        return DataError(f"{kind}: {folder} holds {_names(found)}, in none of the layouts under {root} ({where}); "
                         f"pass --data-root {folder} (a folder holding all four files is read as it is)")
    return DataError(f"{kind}: no dataset files under {root}; looked for {expected} in {where}, found "
                     f"{folder_contents(root)}. Pass --data-root DIR with one of these layouts, or add --download "
                     f"to fetch it into {root / kind / 'raw'} (needs internet)")


def read_bytes(kind: str, path: Path) -> bytes:
    """The file's bytes, decompressed when it starts with gzip's magic (whatever its name)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"{kind}: cannot read {path} ({type(e).__name__}: {e.strerror or e})") from None
    if data[:2] != GZIP_MAGIC:
        return data
    try:
        return gzip.decompress(data)
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataError(f"{kind}: {path} is a corrupt or truncated gzip file ({type(e).__name__}: {e}); expected "
                        f"a complete gzip of the idx file {path.name.removesuffix('.gz')}: fetch it again") from None


def parse_idx(kind: str, path: Path, data: bytes, magic: int, dims: int) -> np.ndarray:
    """The uint8 array of an idx file's ``data`` (its decompressed bytes), checked against its header."""
    what = "images" if magic == IMAGES_MAGIC else "labels"
    header = 4 + 4 * dims
    if len(data) < header:
        raise DataError(f"{kind}: {path} holds {len(data)} bytes, fewer than an idx {what} header ({header} bytes: "
                        f"magic 0x{magic:08x} and {dims} sizes); expected an idx {what} file")
    found = struct.unpack(">I", data[:4])[0]
    if found != magic:
        raise DataError(f"{kind}: {path} starts with 0x{found:08x}, expected the idx {what} magic 0x{magic:08x}")
    shape = struct.unpack(f">{dims}I", data[4:header])
    size = int(np.prod(shape, dtype=np.int64))
    if len(data) - header != size:
        sizes = " x ".join(map(str, shape)) + (f" = {size}" if dims > 1 else "")
        raise DataError(f"{kind}: {path} holds {len(data) - header} bytes after its header, expected {sizes} (the "
                        f"sizes its header gives): a truncated or damaged file")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape).copy()


def read_split(kind: str, images_path: Path, labels_path: Path, digest) -> tuple[np.ndarray, np.ndarray]:
    """One split's images (N, 28, 28) and int64 labels, checked; their decompressed bytes fed to ``digest``."""
    images_data, labels_data = read_bytes(kind, images_path), read_bytes(kind, labels_path)
    images = parse_idx(kind, images_path, images_data, IMAGES_MAGIC, 3)
    labels = parse_idx(kind, labels_path, labels_data, LABELS_MAGIC, 1)
    if images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise DataError(f"{kind}: {images_path} holds {images.shape[1]}x{images.shape[2]} images, expected "
                        f"{IMAGE_SIDE}x{IMAGE_SIDE}")
    if len(images) == 0:
        raise DataError(f"{kind}: {images_path} holds no images, expected at least one")
    bad = np.flatnonzero(labels >= NUM_CLASSES)
    if bad.size:
        raise DataError(f"{kind}: {labels_path} holds label {labels[bad[0]]} at index {bad[0]}, expected labels "
                        f"0..{NUM_CLASSES - 1}")
    if len(labels) != len(images):
        raise DataError(f"{kind}: {labels_path} holds {len(labels)} labels for the {len(images)} images of "
                        f"{images_path}, expected one label per image")
    digest.update(images_data)
    digest.update(labels_data)
    return images, labels.astype(np.int64)


def download(kind: str, root: Path) -> None:
    """torchvision's download of the four files into ``root/<kind>/raw/`` (it decompresses them there)."""
    from torchvision import datasets  # only here: reading needs no torchvision

    try:
        getattr(datasets, kind)(str(root), train=False, download=True)
    except Exception as e:  # torchvision tries every mirror, then raises one RuntimeError listing each failure
        if len(files_in(root / kind / "raw")) == len(IDX_NAMES):  # downloaded: the reader judges the files
            return
        reason = " ".join(str(e).split())  # torchvision's message spans lines
        raise DataError(f"{kind}: --download into {root / kind / 'raw'} failed ({type(e).__name__}: {reason}); "
                        f"check this machine's internet access, or fetch the four files elsewhere and pass "
                        f"--data-root to their folder") from None


def load_idx(kind: str, data_root: str | Path | None = None, download_missing: bool = False) -> IdxDataset:
    """The four files of ``kind`` from the first place holding them (``places``), read and checked.

    ``download_missing``: where no place holds them, torchvision downloads them into
    ``<data_root or DEFAULT_ROOT>/<kind>/raw/`` first.
    """
    located = find(kind, data_root)
    if located is None and download_missing:
        download(kind, Path(data_root).expanduser() if data_root is not None else DEFAULT_ROOT)
        located = find(kind, data_root)
    if located is None:
        raise not_found(kind, data_root)
    place, files = located
    digest = hashlib.sha256()
    train = read_split(kind, files["train_images"], files["train_labels"], digest)
    test = read_split(kind, files["test_images"], files["test_labels"], digest)
    return IdxDataset(*train, *test, place=place, content_sha=digest.hexdigest()[:16])

