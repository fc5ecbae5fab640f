"""Teachers: cache keys, reuse, and importing external (RepDistiller-style) checkpoints."""
from __future__ import annotations

import pytest
import torch

from kdcore.data import InMemoryData, load_dataset
from kdcore.models import create_model
from benchmarks.teachers import TeacherError, get_teacher, teacher_path
from benchmarks.grid import RunSpec, build_student
from kdcore.train import StudentRun, seed_for, train_cohort
from kdcore.recipe import Recipe

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def data():
    d = load_dataset("digits")
    return InMemoryData("digits", d.train_images[:128], d.train_labels[:128], d.test_images[:64],
                        d.test_labels[:64], 10, d.mean, d.std, pad=1, flip=False)


def test_cache_key_depends_on_dataset_arch_recipe_seed_and_autocast(data, tmp_path):
    desc = data.describe()
    base = teacher_path(tmp_path, desc, "resnet8", Recipe(epochs=1), 0)
    assert base == teacher_path(tmp_path, desc, "resnet8", Recipe(epochs=1), 0, amp="fp32")  # fp32: the old key
    assert base.parent == tmp_path / "digits" and base.name.startswith("resnet8__s0__")
    others = [teacher_path(tmp_path, desc, "resnet14", Recipe(epochs=1), 0),
              teacher_path(tmp_path, desc, "resnet8", Recipe(epochs=2), 0),
              teacher_path(tmp_path, desc, "resnet8", Recipe(epochs=1, lr=0.1), 0),
              teacher_path(tmp_path, desc, "resnet8", Recipe(epochs=1), 1),
              teacher_path(tmp_path, {**desc, "num_train": 129}, "resnet8", Recipe(epochs=1), 0),
              teacher_path(tmp_path, desc, "resnet8", Recipe(epochs=1), 0, amp="bf16")]  # a bf16 teacher (CUDA)
    assert len({base, *others}) == 7


def test_trained_once_then_reused_bitwise(data, tmp_path):
    logs: list[str] = []
    t1, info1 = get_teacher("resnet8", data, Recipe(epochs=1, batch_size=32), 0, CPU, tmp_path, log=logs.append)
    t2, info2 = get_teacher("resnet8", data, Recipe(epochs=1, batch_size=32), 0, CPU, tmp_path, log=logs.append)
    assert info1["source"] == "trained" and info2["source"] == "cache"
    assert info1["top1"] == info2["top1"] and info1["key"] == info2["key"]
    for (k, a), (_, b) in zip(t1.state_dict().items(), t2.state_dict().items()):
        assert torch.equal(a, b), k
    assert not t2.training and all(not p.requires_grad for p in t2.parameters())


def test_truncated_cache_entry_is_retrained(data, tmp_path):
    recipe = Recipe(epochs=1, batch_size=32)
    get_teacher("resnet8", data, recipe, 0, CPU, tmp_path, log=lambda m: None)
    path = teacher_path(tmp_path, data.describe(), "resnet8", recipe, 0)
    path.write_bytes(path.read_bytes()[:500])
    logs: list[str] = []
    _, info = get_teacher("resnet8", data, recipe, 0, CPU, tmp_path, log=logs.append)
    assert info["source"] == "trained"
    assert logs[0] == (f"teacher resnet8: cache entry {path} is unreadable: expected the teacher's weights as kdbench "
                       f"saves them, found a zip archive cut short (500 bytes, no end-of-archive record): truncated; "
                       f"retraining it")


def test_import_repdistiller_style_checkpoint(data, tmp_path):
    torch.manual_seed(3)
    src = create_model("resnet8", num_classes=10)
    ckpt = tmp_path / "ckpt_epoch_240.pth"
    torch.save({"epoch": 240, "model": src.state_dict(), "best_acc": torch.tensor(70.0)}, ckpt)
    teacher, info = get_teacher("resnet8", data, Recipe(), 0, CPU, tmp_path, ckpt=ckpt, log=lambda m: None)
    assert info["source"] == "imported"
    for (k, a), (_, b) in zip(src.state_dict().items(), teacher.state_dict().items()):
        assert torch.equal(a, b), k
    # other module names (here m0, m1, ...), same order and shapes: matched by position
    modules: dict[str, int] = {}
    renamed = {}
    for k, v in src.state_dict().items():
        module, leaf = k.rsplit(".", 1)
        renamed[f"net.m{modules.setdefault(module, len(modules))}.{leaf}"] = v
    torch.save(renamed, tmp_path / "renamed.pth")
    teacher, _ = get_teacher("resnet8", data, Recipe(), 0, CPU, tmp_path, ckpt=tmp_path / "renamed.pth",
                             log=lambda m: None)
    for (k, a), (_, b) in zip(src.state_dict().items(), teacher.state_dict().items()):
        assert torch.equal(a, b), k


def test_import_errors_are_clear(data, tmp_path):
    torch.save({"model": create_model("resnet14", num_classes=10).state_dict()}, tmp_path / "r14.pth")
    with pytest.raises(TeacherError, match="does not fit"):
        get_teacher("resnet8", data, Recipe(), 0, CPU, tmp_path, ckpt=tmp_path / "r14.pth")
    torch.save({"model": create_model("resnet8", num_classes=100).state_dict()}, tmp_path / "c100.pth")
    with pytest.raises(TeacherError, match="class count"):  # a CIFAR-100 teacher for a 10-class dataset
        get_teacher("resnet8", data, Recipe(), 0, CPU, tmp_path, ckpt=tmp_path / "c100.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(TeacherError, match="unreadable"):
        get_teacher("resnet8", data, Recipe(), 0, CPU, tmp_path, ckpt=tmp_path / "junk.pth")


def test_a_teachers_init_and_batches_are_no_students(data, tmp_path):
    """The teacher trains from its own init on its own batch stream: a vanilla student of the same architecture,
    seed and recipe (seed 0, as the presets' teacher_seed) trains to other weights. Under the first seeding
    scheme the two shared seed_for(0, "init", arch) and seed_for(0, "data"), and were bitwise equal."""
    recipe = Recipe(epochs=1, batch_size=32)
    teacher, _ = get_teacher("resnet8", data, recipe, 0, CPU, tmp_path, log=lambda m: None)
    model, method = build_student(RunSpec("vanilla", "resnet8", "resnet8", 0), {}, data, None, CPU)
    untrained = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(seed_for(0, "teacher", "init", "resnet8"))
    teacher_init = create_model("resnet8", num_classes=data.num_classes).state_dict()
    assert not torch.equal(untrained["conv1.weight"], teacher_init["conv1.weight"])
    student = StudentRun("vanilla", model, method, recipe, 0)
    train_cohort([student], data, CPU, data_generator=torch.Generator().manual_seed(seed_for(0, "data")))
    differ = [k for k, v in student.model.state_dict().items()
              if v.is_floating_point() and not torch.equal(v, teacher.state_dict()[k])]
    assert "conv1.weight" in differ and "fc.weight" in differ
    # the two streams: not one batch order
    firsts = [next(iter(data.epoch_batches(32, torch.Generator().manual_seed(seed_for(0, *label)), CPU)))[2]
              for label in (("data",), ("teacher", "data"))]
    assert not torch.equal(*firsts)
