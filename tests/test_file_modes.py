"""Every file kdbench writes gets the mode the user's umask gives a plainly created file (results on a shared
cluster are read by a group): the atomically written ones too, whose temp file ``mkstemp`` creates 0o600."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from kdcore import checkpoints, records
from benchmarks import teachers
from kdcore.models import create_model
from benchmarks.run import main


@pytest.fixture(params=[0o022, 0o002], ids=["umask022", "umask002"])
def umask(request):
    old = os.umask(request.param)
    records.file_mode.cache_clear()  # read once per process: read again under this umask
    try:
        yield request.param
    finally:
        os.umask(old)
        records.file_mode.cache_clear()


def modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mode & 0o777 for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_mode_is_the_umasks(umask):
    assert records.file_mode() == {0o022: 0o644, 0o002: 0o664}[umask]
    assert records.file_mode() == 0o666 & ~umask


def test_every_file_of_a_grid_and_an_import_follows_the_umask(umask, tmp_path, capsys, monkeypatch):
    results = tmp_path / "r"
    # a run's and a teacher's checkpoint are removed once they finish: kept here, to see theirs
    monkeypatch.setattr(checkpoints, "remove", lambda path: None)
    assert main(["--methods", "vanilla,kd", "--pairs", "resnet8:resnet8", "--seeds", "0", "--epochs", "2",
                 "--set", "teacher_train.epochs=2", "--grid", "g", "--results", str(results), "--quiet"]) == 0, \
        capsys.readouterr().err
    ckpt = tmp_path / "in" / "resnet8_vanilla" / "ckpt_epoch_240.pth"
    ckpt.parent.mkdir(parents=True)
    torch.save({"model": create_model("resnet8", num_classes=10).state_dict()}, ckpt)
    assert teachers.main(["import", str(tmp_path / "in"), "--dataset", "digits", "--results", str(results),
                          "--device", "cpu"]) == 0
    found = modes(results)
    teacher = next(Path(f).stem for f in found if f.startswith("teachers/digits/resnet8__s0__") and f.endswith(".json"))
    wanted = ["g/grid.json", "g/report.md",
              *(f"g/runs/{m}__resnet8-resnet8__s0{suffix}" for m in ("vanilla", "kd")
                for suffix in (".json", ".metrics.jsonl", ".student.pt", ".best.pt", ".ckpt.pt")),
              *(f"teachers/digits/{teacher}{suffix}" for suffix in (".pt", ".json", ".ckpt.pt")),
              "teachers/digits/imported/resnet8.pt", "teachers/digits/imported/resnet8.json"]
    assert set(wanted) <= set(found), sorted(set(wanted) - set(found))
    assert {f: oct(m) for f, m in found.items() if m != 0o666 & ~umask} == {}
