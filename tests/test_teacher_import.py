"""Importing the field's teacher checkpoints (issue 13): every format RepDistiller and mdistiller write
loads safely and bitwise; ambiguous or hostile files are refused; ``python -m benchmarks.teachers
import DIR`` makes a folder of them the teachers of a dataset and checks them against the published
accuracies.

Every checkpoint here is written by the test itself from a real zoo model whose BN layers hold
random statistics (so a BN loaded into the wrong place changes the logits).
"""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks import teachers
from kdcore.data import load_dataset
from kdcore.models import create_model
from benchmarks.teachers import (TeacherError, get_teacher, import_teacher, imported_teacher_path,
                                 inspect_teacher_checkpoint, load_state_dict_loose, main,
                                 read_teacher_checkpoint, teacher_available, teacher_identity, teacher_key,
                                 weights_fingerprint)
from kdcore.train import evaluate
from kdcore.recipe import Recipe
from conftest import write_cifar

CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parents[1]
NUMPY2_SCALAR = b"cnumpy._core.multiarray\nscalar\n"  # how numpy 2.x pickles np.float64's constructor
NUMPY1_SCALAR = b"cnumpy.core.multiarray\nscalar\n"  # how numpy 1.x did (RepDistiller-era files)
CPU_TAG, CUDA_TAG = b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0"  # storage location in the pickle


def source_model(arch: str = "resnet8", seed: int = 0, classes: int = 100) -> torch.nn.Module:
    """A zoo model with random weights and random BN statistics (no two BN layers alike)."""
    torch.manual_seed(seed)
    model = create_model(arch, num_classes=classes)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_()
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.num_batches_tracked.fill_(int(torch.randint(1, 10_000, ())))
    return model.eval()


def logits(model: torch.nn.Module) -> torch.Tensor:
    torch.manual_seed(123)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        return model.eval()(x)


def assert_same_model(loaded: torch.nn.Module, src: torch.nn.Module) -> None:
    assert torch.equal(logits(loaded), logits(src))
    a, b = loaded.state_dict(), src.state_dict()
    assert list(a) == list(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def repdistiller_state(model: torch.nn.Module, epoch: int = 240) -> dict:
    """What RepDistiller's train_teacher.py saves: weights, epoch, accuracy and the SGD state, whose lr
    its adjust_learning_rate computes with numpy (a numpy.float64)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    steps = np.sum(epoch > np.asarray([150, 180, 210]))
    for group in opt.param_groups:
        group["lr"] = 0.05 * (0.1 ** steps)
    assert type(opt.param_groups[0]["lr"]) is np.float64
    for p in model.parameters():  # momentum buffers, as after training
        opt.state[p]["momentum_buffer"] = torch.zeros_like(p)
    return {"epoch": epoch, "model": model.state_dict(), "accuracy": torch.tensor(72.3),
            "optimizer": opt.state_dict()}


def rewrite_pickle(path: Path, old: bytes, new: bytes) -> None:
    """Replace bytes in the checkpoint's pickle: ``data.pkl`` inside a zip file, or the legacy file itself
    (protocol-2 pickles have no frame lengths, so a GLOBAL or string may change length)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            items = [(info, z.read(info.filename)) for info in z.infolist()]
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
            for info, data in items:
                if info.filename.endswith("/data.pkl"):
                    assert old in data, "the pattern to rewrite is not in the pickle"
                    data = data.replace(old, new)
                z.writestr(info, data)
    else:
        data = path.read_bytes()
        assert old in data, "the pattern to rewrite is not in the pickle"
        path.write_bytes(data.replace(old, new))


def save(obj, path: Path, legacy: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return path


@pytest.fixture(scope="module")
def src():
    return source_model("resnet8")


@pytest.fixture(scope="module")
def cifar100(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    write_cifar(root, "cifar100", n_train=10, n_test=20, seed=1)
    return root, load_dataset("cifar100", data_root=root)


# ---------------------------------------------------------------------------------------------
# formats

@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-torch1.x"])
@pytest.mark.parametrize("numpy_names", ["numpy._core", "numpy.core"])
def test_repdistiller_checkpoint_with_numpy_lr_loads_bitwise(src, tmp_path, legacy, numpy_names):
    path = save(repdistiller_state(src), tmp_path / "resnet8_vanilla" / "ckpt_epoch_240.pth", legacy)
    assert zipfile.is_zipfile(path) is not legacy
    if numpy_names == "numpy.core":  # as written under numpy 1.x
        rewrite_pickle(path, NUMPY2_SCALAR, NUMPY1_SCALAR)
    scalar = NUMPY1_SCALAR if numpy_names == "numpy.core" else NUMPY2_SCALAR
    raw = path.read_bytes() if legacy else zipfile.ZipFile(path).read(
        next(n for n in zipfile.ZipFile(path).namelist() if n.endswith("/data.pkl")))
    assert scalar in raw
    with pytest.raises(Exception, match=numpy_names.replace(".", r"\.") + r"\.multiarray\.scalar"):
        torch.load(path, map_location="cpu", weights_only=True)  # the issue: plain weights_only refuses it
    assert_same_model(import_teacher("resnet8", path, 100), src)
    assert list(read_teacher_checkpoint(path)) == list(src.state_dict())


def test_dataparallel_prefix_bare_dict_and_old_bn_files_load_bitwise(src, tmp_path):
    state = src.state_dict()
    module = {"module." + k: v for k, v in state.items()}
    files = {
        "dp-model.pth": {"model": module, "epoch": 240},
        "dp-state_dict.pth": {"state_dict": module},
        "dp-bare.pth": module,
        "bare.pth": state,
        "state_dict.pth": {"state_dict": state, "epoch": 3},
    }
    for name, obj in files.items():
        path = save(obj, tmp_path / name)
        assert list(read_teacher_checkpoint(path)) == list(state), name
        assert_same_model(import_teacher("resnet8", path, 100), src)
    # torch < 0.4.1 wrote no num_batches_tracked: still by name, the model's counters are kept
    old = save({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, tmp_path / "old.pth")
    loaded = import_teacher("resnet8", old, 100)
    assert torch.equal(logits(loaded), logits(src))
    assert int(loaded.state_dict()["bn1.num_batches_tracked"]) == 0


def test_cuda_tagged_checkpoint_loads_on_a_cpu_machine(src, tmp_path):
    for legacy in (False, True):
        path = save(repdistiller_state(src), tmp_path / f"cuda-{legacy}.pth", legacy)
        rewrite_pickle(path, CPU_TAG, CUDA_TAG)  # as if saved from model.cuda(): storages tagged cuda:0
        if not torch.cuda.is_available():  # the tag is real: without map_location torch wants a GPU
            with pytest.raises(RuntimeError, match="CUDA"):
                with torch.serialization.safe_globals(teachers._numpy_safe_globals()):
                    torch.load(path, weights_only=True)
        loaded = import_teacher("resnet8", path, 100)
        assert_same_model(loaded, src)
        assert all(t.device.type == "cpu" for t in loaded.state_dict().values())


def test_same_weights_in_every_format_have_one_fingerprint(src, tmp_path):
    state = src.state_dict()
    sha = weights_fingerprint(state)
    assert len(sha) == 64 and int(sha, 16) >= 0
    paths = [save(repdistiller_state(src), tmp_path / "a.pth"),
             save({"module." + k: v for k, v in state.items()}, tmp_path / "b.pth"),
             save(state, tmp_path / "c.pth", legacy=True)]
    infos = [inspect_teacher_checkpoint("resnet8", p, 100) for p in paths]
    assert {i["weights_sha"] for i in infos} == {sha}
    assert infos[0] == {"source": "imported", "path": str(paths[0]), "file": "a.pth", "weights_sha": sha,
                        "key": "imported-" + sha[:12]}
    # any change to any weight is another teacher; so is another dtype
    changed = {k: v.clone() for k, v in state.items()}
    changed["layer2.0.bn1.running_var"][3] += 1e-6
    assert weights_fingerprint(changed) != sha
    assert weights_fingerprint({k: v.double() if v.is_floating_point() else v for k, v in state.items()}) != sha
    assert weights_fingerprint({f"x.{k}": v for k, v in state.items()}) != sha
    # the BN step counter does not change what the teacher computes: left out
    assert weights_fingerprint({k: v for k, v in state.items() if "num_batches" not in k}) == sha


# ---------------------------------------------------------------------------------------------
# refusals

def test_files_without_a_state_dict_get_one_clear_line(src, tmp_path):
    cases = {
        "metrics.pth": ({"epoch": 3, "best_acc": 71.2}, ["no model weights found", "'best_acc', 'epoch'"]),
        "list.pth": ([src.state_dict()["fc.weight"]], ["holds a list, not a state dict"]),
        "mixed.pth": ({"model": {"fc.weight": torch.zeros(2), "opt": 3}}, ["'opt' is a int", "model.state_dict()"]),
        "empty.pth": ({"model": {}}, ["empty"]),
    }
    for name, (obj, words) in cases.items():
        with pytest.raises(TeacherError) as e:
            import_teacher("resnet8", save(obj, tmp_path / name), 100)
        msg = str(e.value)
        assert "\n" not in msg and "re-download" not in msg, msg  # readable files: no re-download advice
        for w in words:
            assert w in msg, (name, msg)
    # RepDistiller's <arch>_last.pth also pickles its argparse options: named, refused, not unpickled
    import argparse

    path = save({"opt": argparse.Namespace(model="resnet8"), "model": src.state_dict()}, tmp_path / "last.pth")
    with pytest.raises(TeacherError, match=r"argparse\.Namespace.*refused to unpickle"):
        import_teacher("resnet8", path, 100)
    # a file torch cannot parse at all: what was expected and what is there, in our words (not torch's text)
    good = save(src.state_dict(), tmp_path / "good.pth")
    (tmp_path / "cut.pth").write_bytes(good.read_bytes()[:300])
    legacy = save(src.state_dict(), tmp_path / "legacy.pth", legacy=True)
    (tmp_path / "cut_legacy.pth").write_bytes(legacy.read_bytes()[:300])
    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "junk.pth").write_bytes(b"<html>404 Not Found</html>")
    expected = ("a PyTorch checkpoint of the model's weights (torch.save of its state_dict, or of a dict holding it as "
                "'model' or 'state_dict')")
    found = {"cut.pth": "a zip archive cut short (300 bytes, no end-of-archive record): truncated",
             "cut_legacy.pth": "a pickle stream (300 bytes) that torch cannot read: a legacy torch file cut short or "
                               "corrupt",
             "empty.pth": "an empty file (0 bytes)",
             "junk.pth": "26 bytes that are neither a zip archive nor a pickle stream (starting b'<html>404 Not Fo')"}
    for name, what in found.items():
        with pytest.raises(TeacherError) as e:
            import_teacher("resnet8", tmp_path / name, 100)
        assert str(e.value) == (f"teacher checkpoint {tmp_path / name} is unreadable: expected {expected}, found "
                                f"{what}; re-download or re-save it, or pass another file")
    with pytest.raises(TeacherError, match="not found"):
        import_teacher("resnet8", tmp_path / "missing.pth", 100)


class _RunsACommand:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_malicious_pickle_is_refused_not_executed(src, tmp_path):
    marker = tmp_path / "pwned"
    for legacy in (False, True):
        path = save({"model": src.state_dict(), "payload": _RunsACommand(marker)}, tmp_path / f"evil{legacy}.pth",
                    legacy)
        raw = path.read_bytes() if legacy else zipfile.ZipFile(path).read(
            next(n for n in zipfile.ZipFile(path).namelist() if n.endswith("/data.pkl")))
        assert b"system" in raw and str(marker).encode() in raw  # the payload is really in the file
        with pytest.raises(TeacherError, match=rf"{os.system.__module__}\.system.*refused to unpickle"):
            import_teacher("resnet8", path, 100)
        with pytest.raises(TeacherError):
            inspect_teacher_checkpoint("resnet8", path, 100)
    assert not marker.exists()


def renamed_by_module(state: dict, order: list[str] | None = None) -> dict:
    """Keys renamed to net.m<i>.<leaf>, i numbering modules in the given order (default: the file's)."""
    modules = order or list(dict.fromkeys(k.rsplit(".", 1)[0] for k in state))
    index = {m: i for i, m in enumerate(modules)}
    return {f"net.m{index[k.rsplit('.', 1)[0]]}.{k.rsplit('.', 1)[1]}": v for k, v in state.items()}


def test_by_order_matching_loads_renamed_files_and_refuses_ambiguous_ones(src, tmp_path):
    state = src.state_dict()
    # other names, same order: by position, bitwise (num_batches_tracked follow their module)
    assert_same_model(import_teacher("resnet8", save(renamed_by_module(state), tmp_path / "r.pth"), 100), src)
    # the trap: two BN layers of the same shape stored in the other order. The names still number them
    # in module order, the file's order says otherwise: refused, naming both
    mods = list(dict.fromkeys(k.rsplit(".", 1)[0] for k in state))
    i, j = mods.index("layer1.0.bn1"), mods.index("layer1.0.bn2")
    renamed = renamed_by_module(state)
    order = list(range(len(mods)))
    order[i], order[j] = j, i
    swapped = {k: v for m in order for k, v in renamed.items() if k.startswith(f"net.m{m}.")}
    assert len(swapped) == len(renamed) and list(swapped) != list(renamed)
    # positionally, every shape and leaf still agrees: only the names tell the two BNs apart
    assert [v.shape for v in swapped.values()] == [v.shape for v in renamed.values()]
    with pytest.raises(TeacherError, match=rf"ambiguous: net\.m{j}\.weight and net\.m{i}\.weight have the same "
                                           r"shape \(16,\).*layer1\.0\.bn1\.weight and layer1\.0\.bn2\.weight"):
        import_teacher("resnet8", save(swapped, tmp_path / "swapped.pth"), 100)
    # which matters: loaded by position, those logits are wrong
    model = create_model("resnet8", num_classes=100)
    own = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
    theirs = [v for k, v in swapped.items() if not k.endswith("num_batches_tracked")]
    model.load_state_dict(dict(zip(own, theirs)), strict=False)
    assert not torch.allclose(logits(model), logits(src))
    # shapes that do not fit are refused as before
    with pytest.raises(TeacherError, match="does not fit.*class count"):
        load_state_dict_loose(create_model("resnet8", num_classes=10), renamed, "x.pth")


def test_the_by_order_trap_in_a_bigger_model(tmp_path):
    """wrn_16_2: same check on another family (BN before conv, shortcut convs)."""
    src = source_model("wrn_16_2", seed=1)
    state = src.state_dict()
    assert_same_model(import_teacher("wrn_16_2", save(renamed_by_module(state), tmp_path / "w.pth"), 100), src)
    # names numbered in another module order than the file's: refused
    mods = list(dict.fromkeys(k.rsplit(".", 1)[0] for k in state))
    a, b = mods.index("block2.layer.0.bn2"), mods.index("block2.layer.1.bn1")
    mods[a], mods[b] = mods[b], mods[a]
    with pytest.raises(TeacherError, match="ambiguous"):
        import_teacher("wrn_16_2", save(renamed_by_module(state, mods), tmp_path / "w2.pth"), 100)


# ---------------------------------------------------------------------------------------------
# the grid's view: get_teacher, identity

def test_get_teacher_with_ckpt_reports_inspect_identity(src, cifar100, tmp_path):
    _, data = cifar100
    path = save(repdistiller_state(src), tmp_path / "ckpt_epoch_240.pth", legacy=True)
    rewrite_pickle(path, NUMPY2_SCALAR, NUMPY1_SCALAR)
    teacher, info = get_teacher("resnet8", data, Recipe(), 0, CPU, tmp_path / "t", ckpt=path, log=lambda m: None)
    assert_same_model(teacher, src)
    expected = inspect_teacher_checkpoint("resnet8", path, 100)
    assert {k: info[k] for k in expected} == expected
    assert (info["top1"], info["top5"]) == evaluate(src, data, CPU) and info["arch"] == "resnet8"
    assert teacher_identity("resnet8", data.describe(), Recipe(), 0, tmp_path / "t", 100, ckpt=path) == info["key"]
    assert teacher_identity("resnet8", data.describe(), Recipe(), 0, tmp_path / "t", 100) == \
        teacher_key(data.describe(), "resnet8", Recipe(), 0)


# ---------------------------------------------------------------------------------------------
# python -m benchmarks.teachers import DIR

def fake_save_models(root: Path) -> dict[str, torch.nn.Module]:
    """RepDistiller's save/models/ as fetch_pretrained_teachers.sh leaves it, with random-weight teachers."""
    models = {"resnet56": source_model("resnet56", seed=5), "resnet8": source_model("resnet8", seed=6)}
    base = root / "save" / "models"
    for arch, m in models.items():
        save(repdistiller_state(m), base / f"{arch}_vanilla" / "ckpt_epoch_240.pth")
    # an older epoch of resnet8 with other weights: the newest epoch is the one imported
    save(repdistiller_state(source_model("resnet8", seed=7), epoch=40), base / "resnet8_vanilla" / "ckpt_epoch_40.pth")
    save({"model": {}}, base / "mystery_vanilla" / "ckpt_epoch_240.pth")  # not a zoo model
    return models


def test_import_cli_makes_a_folder_the_datasets_teachers(cifar100, tmp_path):
    data_root, data = cifar100
    models = fake_save_models(tmp_path / "repd")
    store = tmp_path / "results" / "teachers"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.teachers", "import", str(tmp_path / "repd"),
                           "--dataset", "cifar100", "--data-root", str(data_root), "--results",
                           str(tmp_path / "results"), "--device", "cpu"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    measured = {a: evaluate(m, data, CPU)[0] for a, m in models.items()}
    assert lines[0].split() == ["arch", "file", "top-1", "published", "diff"]
    row = {ln.split()[0]: ln.split() for ln in lines[1:3]}
    assert row["resnet56"] == ["resnet56", "resnet56_vanilla/ckpt_epoch_240.pth", f"{measured['resnet56']:.2f}",
                                "72.34", f"{measured['resnet56'] - 72.34:+.2f}"]
    assert row["resnet8"] == ["resnet8", "resnet8_vanilla/ckpt_epoch_240.pth", f"{measured['resnet8']:.2f}", "-", "-"]
    assert not [ln for ln in lines if ln.startswith(("warning", "error"))]  # those go to stderr
    warnings = [ln for ln in proc.stderr.splitlines() if ln.startswith("warning")]
    assert len(warnings) == 2, proc.stderr
    assert "'mystery'" in warnings[0] and "skipped" in warnings[0]
    assert warnings[1].startswith(f"warning: resnet56 tested at {measured['resnet56']:.2f}") and \
        "below the published 72.34" in warnings[1]
    # every grid on cifar100 now gets these teachers, with their weight identity, without training
    for arch, src in models.items():
        assert imported_teacher_path(store, "cifar100", arch).is_file()
        teacher, info = get_teacher(arch, data, Recipe(epochs=240), 0, CPU, store, log=lambda m: None)
        assert_same_model(teacher, src)
        sha = weights_fingerprint(src.state_dict())
        assert info["source"] == "imported" and info["weights_sha"] == sha and info["key"] == "imported-" + sha[:12]
        assert info["top1"] == measured[arch] and info["file"] == "ckpt_epoch_240.pth"
        assert info["published_top1"] == (72.34 if arch == "resnet56" else None)
        assert teacher_identity(arch, data.describe(), Recipe(epochs=240), 0, store, 100) == info["key"]
        # what the DDP entry point checks before loading (it must not ask for a trained cache entry)
        assert teacher_available(store, data.describe(), arch, Recipe(epochs=240), 0)
    # forget: back to the trained cache's identity
    assert main(["forget", "resnet8", "--dataset", "cifar100", "--teacher-dir", str(store)]) == 0
    assert not imported_teacher_path(store, "cifar100", "resnet8").with_suffix(".json").exists()
    assert not teacher_available(store, data.describe(), "resnet8", Recipe(), 0)
    assert teacher_identity("resnet8", data.describe(), Recipe(), 0, store, 100) == \
        teacher_key(data.describe(), "resnet8", Recipe(), 0)
    assert main(["forget", "resnet8", "--dataset", "cifar100", "--teacher-dir", str(store)]) == 2


def test_import_warns_exactly_beyond_one_point(cifar100, tmp_path, monkeypatch, capsys):
    data_root, data = cifar100
    a, b = source_model("resnet8", seed=11), source_model("resnet14", seed=12)
    for arch, m in (("resnet8", a), ("resnet14", b)):
        save(repdistiller_state(m), tmp_path / "cifar_teachers" / f"{arch}_vanilla" / "ckpt_epoch_240.pth")
    top_a, top_b = evaluate(a, data, CPU)[0], evaluate(b, data, CPU)[0]
    monkeypatch.setattr(teachers, "published_teacher_top1",
                        lambda name: {"resnet8": top_a + 0.99, "resnet14": top_b + 1.01})
    assert main(["import", str(tmp_path), "--data-root", str(data_root), "--teacher-dir", str(tmp_path / "t"),
                 "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    out = captured.out
    warned = [ln.split()[1] for ln in captured.err.splitlines() if ln.startswith("warning")]
    assert warned == ["resnet14"], captured.err
    assert f"{top_a:.2f}" in out and f"{top_a + 0.99:.2f}" in out and "-0.99" in out and "-1.01" in out


def test_import_cli_bad_input_is_one_line_exit_2(cifar100, tmp_path, capsys):
    data_root, _ = cifar100
    (tmp_path / "empty").mkdir()
    save(repdistiller_state(source_model()), tmp_path / "ok" / "resnet8_vanilla" / "ckpt_epoch_240.pth")
    cases = [(["import", str(tmp_path / "nope")], "is not a folder"),
             (["import", str(tmp_path / "empty")], "no teacher checkpoints"),
             (["import", str(tmp_path / "ok"), "--dataset", "cifar1000"], "unknown dataset"),
             (["import", str(tmp_path / "ok"), "--data-root", str(tmp_path / "empty")], "not found"),
             (["import", str(tmp_path / "ok"), "--device", "cuda:x", "--data-root", str(data_root)], "bad --device"),
             (["forget", "resnet8"], "no imported teacher")]
    for argv, words in cases:
        assert main(argv + ["--teacher-dir", str(tmp_path / "t")]) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and words in err, (argv, err)
    assert not (tmp_path / "t").exists()


# names, order and shapes of RepDistiller's state dicts (models/ at commit b84f547, num_classes=100):
# sha256 of "key:shape" lines, first 16 hex digits, and the entry count. mdistiller's CIFAR models give
# the same. Equal digests mean its checkpoints load by name, never through the by-order fallback.
REPDISTILLER_STATE_DICTS = {
    "resnet56": ("1d3465ca54c565c3", 344),
    "resnet110": ("932a055377884f91", 668),
    "resnet32x4": ("670cd82105052059", 206),
    "wrn_40_2": ("029bbe2cbcd6d721", 227),
    "vgg13": ("adbafd0e22ce9038", 72),
    "ResNet50": ("01c941c55d8830fa", 320),
    "MobileNetV2": ("67dd5adb2196190e", 320),
    "ShuffleV1": ("542ef1e4af09fe27", 296),
    "ShuffleV2": ("db138f467cd82af3", 338),
}


@pytest.mark.parametrize("arch", sorted(REPDISTILLER_STATE_DICTS))
def test_zoo_state_dicts_have_repdistillers_names_order_and_shapes(arch):
    import hashlib

    sd = create_model(arch, num_classes=100).state_dict()
    text = "\n".join(f"{k}:{tuple(v.shape)}" for k, v in sd.items())
    assert (hashlib.sha256(text.encode()).hexdigest()[:16], len(sd)) == REPDISTILLER_STATE_DICTS[arch]


def test_import_of_a_folder_with_one_bad_file_imports_the_rest_and_exits_1(cifar100, tmp_path, capsys):
    data_root, _ = cifar100
    good = tmp_path / "in" / "resnet8_vanilla" / "ckpt_epoch_240.pth"
    save(repdistiller_state(source_model("resnet8", seed=3)), good)
    bad = tmp_path / "in" / "resnet14_vanilla" / "ckpt_epoch_240.pth"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"\x00 not a checkpoint")
    store = tmp_path / "t"
    assert main(["import", str(tmp_path / "in"), "--data-root", str(data_root), "--teacher-dir", str(store),
                 "--device", "cpu"]) == 1
    captured = capsys.readouterr()
    errors = captured.err.splitlines()
    assert len(errors) == 1 and errors[0].startswith("error: resnet14: ") and str(bad) in errors[0], errors
    assert "imported 1 teacher into " in captured.out and "error" not in captured.out
    assert imported_teacher_path(store, "cifar100", "resnet8").is_file()
    assert not imported_teacher_path(store, "cifar100", "resnet14").exists()


def test_an_imported_teacher_is_refused_for_other_inputs(cifar100, tmp_path):
    """Its test top-1 was measured on the import's inputs: a grid feeding it others gets one line, not the
    import's number beside a teacher that sees other images."""
    data_root, data = cifar100
    ckpt = tmp_path / "in" / "resnet8_vanilla" / "ckpt_epoch_240.pth"
    save(repdistiller_state(source_model("resnet8", seed=4)), ckpt)
    store = tmp_path / "t"
    assert main(["import", str(tmp_path / "in"), "--data-root", str(data_root), "--teacher-dir", str(store),
                 "--device", "cpu"]) == 0
    other = load_dataset("cifar100", data_root=data_root, normalize=False)  # x / 255, not mean/std
    with pytest.raises(TeacherError) as e:
        get_teacher("resnet8", other, Recipe(), 0, CPU, store, log=lambda m: None)
    assert str(e.value) == ("teacher resnet8 was imported for cifar100 with normalize True (here False): its test "
                            "top-1 does not hold for this grid's inputs; run with the import's data options, or "
                            "remove it to train one (python -m benchmarks.teachers forget resnet8 --dataset cifar100)")
    teacher, info = get_teacher("resnet8", data, Recipe(), 0, CPU, store, log=lambda m: None)  # the import's
    assert info["source"] == "imported" and info["inputs"]["normalize"] is True


def test_a_truncated_imported_teacher_is_one_line_in_our_words(cifar100, tmp_path):
    data_root, data = cifar100
    ckpt = tmp_path / "in" / "resnet8_vanilla" / "ckpt_epoch_240.pth"
    save(repdistiller_state(source_model("resnet8", seed=5)), ckpt)
    store = tmp_path / "t"
    assert main(["import", str(tmp_path / "in"), "--data-root", str(data_root), "--teacher-dir", str(store),
                 "--device", "cpu"]) == 0
    stored = imported_teacher_path(store, "cifar100", "resnet8")
    stored.write_bytes(stored.read_bytes()[:2000])
    with pytest.raises(TeacherError) as e:
        get_teacher("resnet8", data, Recipe(), 0, CPU, store, log=lambda m: None)
    assert str(e.value) == (f"imported teacher {stored} is unreadable: expected the teacher's weights as kdbench saves "
                            f"them, found a zip archive cut short (2000 bytes, no end-of-archive record): truncated; "
                            f"re-import it (python -m benchmarks.teachers import ...) or remove it (python -m "
                            f"benchmarks.teachers forget resnet8 --dataset cifar100)")
