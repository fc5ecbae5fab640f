"""Datasets register by decorator (``kdcore.data.registry``) and are discovered as methods and models are.

The guide's example (docs/examples/dataset_example.py, included in docs/guides/dataset.md) runs as written:
imported by path it registers ``blobs``, which loads and trains through the runner; the fixture unregisters it,
so no other test sees it among the known datasets. A dataset file dropped in ``kdcore/data/`` is found
without being listed anywhere (in a fresh interpreter on a copy of the package).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.run import main
from cohorts import import_file
from kdcore.data import (DATASETS, DataError, InMemoryData, check_data_options, dataset_loader, list_datasets,
                         load_dataset, register_dataset, unregister_dataset)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs/examples/dataset_example.py"
GUIDE = ROOT / "docs/guides/dataset.md"
BUILT_IN = ["digits", "cifar10", "cifar100", "imagefolder", "MNIST", "FashionMNIST"]


@pytest.fixture
def blobs():
    """The guide's example module, imported by path (which registers ``blobs``); unregistered afterwards."""
    module = import_file(EXAMPLE, "dataset_example")
    try:
        yield module
    finally:
        unregister_dataset("blobs")
    assert list_datasets() == BUILT_IN


def test_built_in_datasets_keep_their_order():
    assert list_datasets() == BUILT_IN and list(DATASETS) == BUILT_IN and len(DATASETS) == 6
    assert DATASETS["cifar10"] is dataset_loader("cifar10")


def test_unknown_dataset_lists_the_known_ones_in_order():
    with pytest.raises(DataError) as e:
        load_dataset("mnist")
    assert str(e.value) == ("unknown dataset 'mnist'; known datasets: digits, cifar10, cifar100, imagefolder, MNIST, "
                            "FashionMNIST")
    with pytest.raises(DataError, match="unknown dataset 'blobs'"):
        unregister_dataset("blobs")


def test_a_name_registered_twice_raises():
    with pytest.raises(ValueError, match="dataset 'digits' is registered twice"):
        register_dataset("digits")(lambda **_: None)
    assert list_datasets() == BUILT_IN and dataset_loader("digits").__name__ == "load_digits"


def test_the_example_registers_and_loads(blobs):
    assert list_datasets() == BUILT_IN + ["blobs"]  # no order=: after the built-in ones
    assert dataset_loader("blobs") is blobs.load_blobs
    d = load_dataset("blobs", data_root="ignored", download=False)  # what the runner passes every loader
    assert isinstance(d, InMemoryData) and d.name == "blobs" and d.num_classes == 2
    assert d.train_images.shape == (256, 3, 8, 8) and d.test_images.shape == (128, 3, 8, 8)
    assert d.train_images.dtype == torch.uint8 and d.input_shape == (3, 8, 8)
    assert d.train_labels.bincount().tolist() == [128, 128] and d.test_labels.bincount().tolist() == [64, 64]
    # two blobs: the class means are far apart, and a seed fixes the images
    means = [float(d.train_images[d.train_labels == c].float().mean()) for c in (0, 1)]
    assert means[0] < 110 < 145 < means[1]
    assert torch.equal(load_dataset("blobs").train_images, d.train_images)
    other = load_dataset("blobs", seed=1)
    assert not torch.equal(other.train_images, d.train_images)
    # other images, another description (the teacher cache's key)
    assert d.describe()["seed"] == 0 and other.describe()["seed"] == 1 and d.describe()["spread"] == 40.0
    small = load_dataset("blobs", num_train=64, augment="none")
    assert small.num_train == 64 and small.pad == 0 and small.describe()["augment"] == "none"
    # the options are the loader's keyword parameters, checked as the built-in ones are
    check_data_options("blobs", {"num_train": 64, "spread": 10, "data_root": "x"})
    with pytest.raises(DataError, match="blobs has no data option 'image_size'; its options: num_train, num_test, "
                                        "spread, seed, augment, normalize"):
        check_data_options("blobs", {"image_size": 16})
    with pytest.raises(DataError, match=r"blobs: data.num_train must be an int \(default 256\), got 1.5"):
        check_data_options("blobs", {"num_train": 1.5})
    with pytest.raises(DataError, match="blobs: data.augment must be one of"):
        load_dataset("blobs", augment="mixup")


def test_the_example_trains_through_the_runner(blobs, tmp_path, capsys):
    code = main(["--results", str(tmp_path), "--dataset", "blobs", "--set", "data.num_train=64",
                 "--set", "data.num_test=32", "--set", "data.spread=30", "--methods", "kd", "--seeds", "0", "--pairs", "resnet8:resnet8",
                 "--epochs", "1", "--set", "teacher_train.epochs=1", "--quiet", "--no-report"])
    err = capsys.readouterr().err
    assert code == 0, err
    runs = [json.loads(p.read_text()) for p in tmp_path.rglob("runs/*.json")]
    assert runs, sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    (run,) = runs
    assert run["status"] == "complete" and run["dataset"] == "blobs" and run["teacher_info"]["source"] == "trained"
    data = run["config"]["data"]  # the students' data as described: the blobs, the options given
    assert (data["name"], data["num_test"], data["num_classes"], data["input_shape"]) == ("blobs", 32, 2, [3, 8, 8])
    assert data["spread"] == 30
    assert list(tmp_path.glob("teachers/blobs/resnet8__s0__*.pt"))


def test_the_unknown_dataset_error_names_a_registered_one(blobs, capsys):
    assert main(["--dataset", "blob", "--quiet"]) == 2
    assert capsys.readouterr().err.strip().endswith("known datasets: digits, cifar10, cifar100, imagefolder, MNIST, "
                                                    "FashionMNIST, blobs")


def test_a_dataset_file_is_discovered_without_being_listed(tmp_path):
    """A copy of the package with the example dropped in ``kdcore/data/``: importing ``kdcore.data`` registers it
    (nothing lists it), after the built-in names; the real package is untouched."""
    shutil.copytree(ROOT / "kdcore", tmp_path / "kdcore", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(EXAMPLE, tmp_path / "kdcore/data/blobs.py")
    code = ("import json, kdcore.data as d; x = d.load_dataset('blobs'); "
            "print(json.dumps([d.__file__, d.list_datasets(), list(x.input_shape), x.num_classes]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    where, names, shape, classes = json.loads(out.stdout)
    assert Path(where).is_relative_to(tmp_path)
    assert names == BUILT_IN + ["blobs"] and shape == [3, 8, 8] and classes == 2
    assert "blobs" not in list_datasets() and not (ROOT / "kdcore/data/blobs.py").exists()


def test_infrastructure_modules_register_nothing():
    """Each dataset file registers what it holds; the infrastructure modules none (the discovery skips them)."""
    by_module = {}
    for name in list_datasets():
        by_module.setdefault(dataset_loader(name).__module__, []).append(name)
    assert by_module == {"kdcore.data.digits": ["digits"], "kdcore.data.cifar": ["cifar10", "cifar100"],
                         "kdcore.data.imagefolder": ["imagefolder"], "kdcore.data.mnist": ["MNIST", "FashionMNIST"]}


def test_the_guide_includes_the_example():
    text = GUIDE.read_text()
    assert '--8<-- "docs/examples/dataset_example.py"' in text
