"""The ``fashion`` preset (issue 26): every registered method and LS variant that runs on its pairs is in it (the
others refuse the pair with one line and are "n/a" in the grid), and it runs end to end on small idx files written
here in the Debian package's layout (the suite needs no package).
"""
from __future__ import annotations

import json

import torch

from kdcore.config import load_preset, student_recipe, teacher_recipe
from kdcore.data import InMemoryData
from benchmarks.grid import RunSpec, build_student
from kdcore.models import create_model
from benchmarks.run import main
from kdcore.train import freeze
from methods import PairNotSupported, list_methods, modified_methods
from tests.test_oki_presets import write_mnist

NOT_ON_OKI = {"ab", "fsp", "ofd", "cat_kd"}  # stage counts, channels, no BN before a final ReLU, no pre-pool map


def test_every_method_that_runs_on_a_pair_is_in_the_preset():
    cfg = load_preset("fashion")
    # every registered method and LS variant, and crd+kd (RepDistiller's table has the composition as a row)
    assert set(cfg["methods"]) == set(list_methods()) | set(modified_methods()) | {"crd+kd"}
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (20, 3, 28, 28), generator=g, dtype=torch.uint8)
    data = InMemoryData("fake-fashion", x, torch.arange(20) % 10, x[:10], torch.arange(10) % 10, 10, (0.5,) * 3,
                        (0.25,) * 3, pad=0, flip=True)
    refused = {}
    for pair in cfg["pairs"]:
        teacher_name, student_name = pair.split(":")
        torch.manual_seed(0)
        teacher = freeze(create_model(teacher_name, num_classes=10))
        for name in cfg["methods"]:
            try:
                build_student(RunSpec(name, teacher_name, student_name, 0), {}, data, teacher, torch.device("cpu"))
            except PairNotSupported as e:
                assert "\n" not in str(e)
                refused.setdefault(pair, set()).add(name)
    assert refused == {"oki2020_teacher:oki2020_student": NOT_ON_OKI}


def test_recipes_of_the_preset():
    cfg = load_preset("fashion")
    assert student_recipe(cfg, "oki2020_student").lr == 0.01  # the seed paper's lr: its student has no BN
    resnet8 = student_recipe(cfg, "resnet8")
    assert (resnet8.lr, resnet8.epochs, resnet8.batch_size, resnet8.eval_every) == (0.05, 12, 64, 12)
    for teacher in ("oki2020_teacher", "resnet14"):
        t = teacher_recipe(cfg, teacher)
        assert (t.epochs, t.batch_size, t.lr, t.lr_decay_epochs, t.eval_every) == (6, 64, 0.05, [4, 5], 1)
    assert cfg["teacher_reference"]["min_top1"] == 90.0 and cfg["student_fraction"] == 0.02
    assert cfg["data"] == {"augment": "flip"}


def test_one_epoch_from_the_package_layout(tmp_path, capsys):
    root = tmp_path / "fashion-mnist"
    write_mnist(root, "FashionMNIST", n_train=80, n_test=20)
    package = tmp_path / "pkg"
    package.mkdir()
    for f in (root / "FashionMNIST" / "raw").iterdir():  # the Debian package's layout: the files in one folder
        (package / f.name).write_bytes(f.read_bytes())
    results = tmp_path / "results"
    code = main(["--preset", "fashion", "--data-root", str(package), "--results", str(results), "--grid", "g",
                 "--methods", "vanilla,kd,ofd", "--seeds", "0", "--epochs", "1", "--student-fraction", "0.5",
                 "--set", "teacher_train.epochs=1", "--set", "train.eval_every=1",
                 "--set", "teacher_reference.min_top1=0", "--quiet"])
    assert code == 0, capsys.readouterr().err
    status = {}
    for path in (results / "g" / "runs").glob("*.json"):
        rec = json.loads(path.read_text())
        status[rec["run_id"]] = rec["status"]
        if rec["status"] == "complete":
            assert rec["dataset"] == "FashionMNIST" and rec["config"]["data"]["input_shape"] == [3, 28, 28]
    assert status == {"vanilla__oki2020_teacher-oki2020_student__s0": "complete",
                      "kd__oki2020_teacher-oki2020_student__s0": "complete",
                      "ofd__oki2020_teacher-oki2020_student__s0": "not_applicable",
                      "vanilla__resnet14-resnet8__s0": "complete", "kd__resnet14-resnet8__s0": "complete",
                      "ofd__resnet14-resnet8__s0": "complete"}
    grid = json.loads((results / "g" / "grid.json").read_text())
    assert grid["config"]["teacher_reference"]["source"].startswith("Zalando's Fashion-MNIST README")
    report = (results / "g" / "report.md").read_text()
    assert "Published test top-1 of comparable networks on this data: 0–95% (Zalando's" in report
