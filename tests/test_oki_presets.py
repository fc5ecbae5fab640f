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


import json  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from kdcore.config import load_preset, student_recipe, teacher_recipe  # noqa: E402
from kdcore.data import InMemoryData  # noqa: E402
from benchmarks.grid import RunSpec, build_student  # noqa: E402
from kdcore.models import create_model  # noqa: E402
from benchmarks.run import main  # noqa: E402
from kdcore.train import StudentRun, freeze  # noqa: E402
from kdcore.recipe import Recipe
from cohorts import step_each_stage  # noqa: E402
from methods import list_methods, modified_methods  # noqa: E402
from tests.conftest import write_cifar  # noqa: E402

ALL_METHODS = ["vanilla", "kd", "triplet", "pair", "fitnet", "at", "rkd", "crd", "crd+kd"]


def _records(results, grid_prefix):
    grids = [p for p in results.iterdir() if p.name.startswith(grid_prefix)]
    assert len(grids) == 1, grids
    return {r["method"]: r for r in (json.loads(p.read_text()) for p in sorted((grids[0] / "runs").glob("*.json")))}


def test_presets_hold_the_authors_values():
    a = load_preset("oki2020")
    assert (a["dataset"], a["pairs"], a["methods"][:9]) == ("cifar10", ["oki2020_teacher:oki2020_student"], ALL_METHODS)
    assert a["data"] == {"augment": "none", "normalize": False}
    r = student_recipe(a, "oki2020_student")
    assert (r.epochs, r.batch_size, r.lr, r.momentum, r.weight_decay, r.lr_decay_epochs, r.lr_decay_rate) == \
        (500, 100, 0.01, 0.9, 0.007, [100, 200, 300, 400], 0.1)
    assert teacher_recipe(a, "oki2020_teacher") == r
    assert a["method"]["triplet"] == {"gamma": 1.0, "weight": 2.0, "margin": 5.0, "kl": 0.0, "negatives": "dataset"}
    b = load_preset("oki2022")
    assert (b["dataset"], b["pairs"], b["methods"][:9]) == ("cifar10", ["tv_resnet34:oki2022_net"], ALL_METHODS)
    assert b["data"] == {"augment": "none", "normalize": False}
    r = student_recipe(b, "oki2022_net")
    assert (r.epochs, r.batch_size, r.lr, r.momentum, r.weight_decay, r.lr_decay_epochs, r.lr_decay_rate) == \
        (100, 100, 0.01, 0.9, 1e-3, [30, 60, 90], 0.1)
    assert teacher_recipe(b, "tv_resnet34") == r
    assert b["method"]["triplet"] == {"gamma": 1.0, "weight": 2.0, "margin": 5.0, "kl": 1.0, "kl_T": 1.0,
                                      "negatives": "dataset"}


@pytest.mark.parametrize("preset, step, epochs", [("oki2020", 100, 500), ("oki2022", 30, 100)])
def test_milestones_are_the_authors_steplr(preset, step, epochs):
    """PyTorch's StepLR (scheduler.step() after each epoch, as the authors call it) gives every epoch
    the learning rate that Recipe.lr_at gives it, off-by-one included (epoch 101 is the first at x0.1)."""
    recipe = student_recipe(load_preset(preset), "s")
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=recipe.lr, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=step, gamma=0.1)
    for epoch in range(epochs):
        assert opt.param_groups[0]["lr"] == pytest.approx(recipe.lr_at(epoch), rel=1e-12), epoch
        opt.step()
        sched.step()
    assert recipe.lr_at(step - 1) == recipe.lr and recipe.lr_at(step) == pytest.approx(recipe.lr * 0.1)


def _one_epoch(tmp_path, preset, methods, extra=()):
    code = main(["--preset", preset, "--data-root", str(tmp_path / "data"), "--results", str(tmp_path / "r"),
                 "--methods", methods, "--seeds", "0", "--set", "train.epochs=1", "--set", "teacher_train.epochs=1",
                 "--set", "train.batch_size=10", "--set", "teacher_train.batch_size=10", "--quiet", *extra])
    assert code == 0
    return _records(tmp_path / "r", preset)


def test_oki2020_one_epoch_on_cifar_files(tmp_path):
    write_cifar(tmp_path / "data", "cifar10", n_train=40, n_test=20)
    recs = _one_epoch(tmp_path, "oki2020", "vanilla,triplet")
    assert set(recs) == {"vanilla", "triplet"}
    for rec in recs.values():
        assert rec["status"] == "complete" and rec["student"] == "oki2020_student"
        assert rec["teacher"] == "oki2020_teacher" and rec["teacher_info"]["source"] == "trained"
        assert rec["config"]["data"]["augment"] == "none" and rec["config"]["data"]["normalize"] is False
        assert (rec["config"]["data"]["pad"], rec["config"]["data"]["flip"]) == (0, False)
        assert rec["config"]["train"]["weight_decay"] == 0.007
    assert rec["cost"]["student_params"] == 161_130
    assert recs["triplet"]["config"]["method"]["triplet"]["kl"] == 0.0


def test_oki2022_one_epoch_on_cifar_files(tmp_path, capsys):
    import kdcore.models.oki as oki

    oki._said.discard("scratch")  # the notice is printed once per process; another test may have seen it
    write_cifar(tmp_path / "data", "cifar10", n_train=40, n_test=20)
    recs = _one_epoch(tmp_path, "oki2022", "kd,triplet")
    assert set(recs) == {"kd", "triplet"}
    for rec in recs.values():
        assert rec["status"] == "complete" and rec["pair"] == "tv_resnet34:oki2022_net"
        assert rec["config"]["train"]["lr_decay_epochs"] == [30, 60, 90]
    assert recs["triplet"]["config"]["method"]["triplet"]["kl"] == 1.0
    assert "tv_resnet34: torchvision's resnet34 from scratch" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["MNIST", "FashionMNIST"])
def test_oki2022_one_epoch_on_mnist_files(tmp_path, kind):
    write_mnist(tmp_path / "data", kind, n_train=40, n_test=20)
    recs = _one_epoch(tmp_path, "oki2022", "triplet", ["--dataset", kind, "--pairs", "oki2022_net:oki2022_net"])
    rec = recs["triplet"]
    assert rec["status"] == "complete" and rec["dataset"] == kind
    assert rec["config"]["data"]["input_shape"] == [3, 28, 28]


def test_oki2022_imagenet_teacher_without_weights_is_one_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KDBENCH_RESNET34_WEIGHTS", str(tmp_path / "resnet34-b627a593.pth"))
    write_cifar(tmp_path / "data", "cifar10", n_train=20, n_test=10)
    code = main(["--preset", "oki2022", "--data-root", str(tmp_path / "data"), "--results", str(tmp_path / "r"),
                 "--methods", "vanilla", "--seeds", "0", "--pairs", "tv_resnet34_imagenet:oki2022_net",
                 "--set", "train.epochs=1", "--set", "teacher_train.epochs=1", "--quiet", "--no-report"])
    err = capsys.readouterr().err
    assert code == 2 and "no ImageNet weights file" in err and "nothing is downloaded here" in err


@pytest.mark.parametrize("smoke,full", [("oki2020_digits", "oki2020"), ("oki2022_digits", "oki2022")])
def test_smoke_presets_keep_the_papers_setting_on_digits(smoke, full):
    """The digits smoke presets change only the data, the length of training and the seeds; the networks, the
    pipeline (no augmentation, no normalisation), the optimiser and the triplet loss are the full preset's."""
    s, f = load_preset(smoke), load_preset(full)
    # the paper's comparison set only, to stay within minutes (the full presets add the rest of the field)
    assert (s["dataset"], s["pairs"], s["methods"]) == ("digits", f["pairs"], ALL_METHODS)
    assert s["data"] == {"image_size": 16, **f["data"]}
    student = f["pairs"][0].split(":")[1]
    rs, rf = student_recipe(s, student), student_recipe(f, student)
    assert (rs.batch_size, rs.lr, rs.momentum, rs.weight_decay, rs.lr_decay_rate) == \
        (rf.batch_size, rf.lr, rf.momentum, rf.weight_decay, rf.lr_decay_rate)
    # 12 epochs; oki2022's steps at 30/60/90 of 100 keep their place (4/7/11 of 12); oki2020's every 100 of 500
    # become one step after epoch 9 (its preset says why)
    assert (rs.epochs, rs.lr_decay_epochs) == (12, {"oki2020": [9], "oki2022": [4, 7, 11]}[full])
    assert s["method"]["triplet"] == f["method"]["triplet"]
    assert s["method"]["at"]["beta"] == 250.0  # 1000 / (32/16)^2


def test_oki2022_digits_smoke_runs_one_epoch(tmp_path, capsys):
    res = tmp_path / "r"
    assert main(["--preset", "oki2022_digits", "--results", str(res), "--methods", "vanilla,triplet", "--seeds", "0",
                 "--epochs", "1", "--set", "teacher_train.epochs=1", "--quiet", "--no-report"]) == 0
    recs = _records(res, "oki2022_digits")
    assert {m: r["status"] for m, r in recs.items()} == {"vanilla": "complete", "triplet": "complete"}
    assert recs["triplet"]["config"]["method"]["triplet"]["kl"] == 1.0


@pytest.mark.parametrize("preset", ["oki2020", "oki2022"])
def test_full_presets_run_every_method_that_runs_on_their_networks(preset):
    """Every registered method and +ls variant either is in the preset and takes a training step on its pair
    (CIFAR-10 shapes), or is left out and refuses the pair at build with one clear line."""
    cfg = load_preset(preset)
    teacher_name, student_name = cfg["pairs"][0].split(":")
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (40, 3, 32, 32), generator=g, dtype=torch.uint8)
    data = InMemoryData("fake10", x, torch.arange(40) % 10, x[:8], torch.arange(8) % 10, 10, (0.5,) * 3, (0.25,) * 3,
                        pad=0, flip=False, normalize=False)
    torch.manual_seed(0)
    teacher = freeze(create_model(teacher_name, num_classes=10))
    xb, yb, ib = next(data.epoch_batches(8, g, torch.device("cpu")))
    with torch.no_grad():
        t_out = teacher.forward_kd(xb, preact=True)
    names = list_methods() + modified_methods()
    cpu = torch.device("cpu")
    for name in names:
        try:
            model, method = build_student(RunSpec(name, teacher_name, student_name, 0), {}, data, teacher, cpu)
        except (ValueError, NotImplementedError) as e:
            assert name not in cfg["methods"], f"{name} is in {preset} but refuses its pair: {e}"
            assert "\n" not in str(e) and name.split("+")[0] in str(e), (name, str(e))
            continue
        assert name in cfg["methods"], f"{name} runs on {cfg['pairs'][0]} but {preset} leaves it out"
        run = StudentRun(name, model, method, Recipe(batch_size=8), 0)
        for _, loss in step_each_stage(run, xb, yb, ib, t_out, data, teacher):
            assert torch.isfinite(loss), name
