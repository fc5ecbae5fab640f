"""A result's identity: the teacher it was distilled from, checks before work, best-epoch weights.

Issue: a grid rerun with another ``--teacher-ckpt`` answered "1 already complete" with the first
teacher's results. Now an imported teacher's weight hash is part of the grid's protocol.
"""
from __future__ import annotations

import pytest
import torch

from kdcore import records
from kdcore.models import create_model
from benchmarks.run import main
from benchmarks.teachers import weights_fingerprint
from reports.aggregate import count_stale

RID = records.run_id("kd", "resnet8", "resnet8", 0)

TINY = ["--pairs", "resnet8:resnet8", "--methods", "kd", "--seeds", "0", "--epochs", "1", "--quiet", "--no-report"]


def run_cli(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def _teacher_file(path, seed: int):
    torch.manual_seed(seed)
    model = create_model("resnet8", num_classes=10)
    torch.save({"model": model.state_dict(), "epoch": 240}, path)
    return model


def test_another_teacher_checkpoint_is_never_answered_with_the_first_ones_results(capsys, tmp_path):
    a, b = _teacher_file(tmp_path / "A.pth", 1), _teacher_file(tmp_path / "B.pth", 2)
    res = tmp_path / "results"
    code, out_a, _ = run_cli(capsys, "--results", str(res), "--teacher-ckpt", f"resnet8={tmp_path}/A.pth",
                             "--dry-run", *TINY)
    assert code == 0
    grid_a = out_a.split()[1]
    assert grid_a.startswith("digits-")  # an imported teacher is part of the protocol
    sha_a = weights_fingerprint(a.state_dict())
    assert f"teacher resnet8: imported from {tmp_path}/A.pth, key imported-{sha_a[:12]}" in out_a
    code, _, err = run_cli(capsys, "--results", str(res), "--teacher-ckpt", f"resnet8={tmp_path}/A.pth", *TINY)
    assert code == 0 and "1 run, 0 already complete, 1 to run" in err
    rec_a = records.read_json(records.record_path(res / grid_a, "kd__resnet8-resnet8__s0"))
    assert rec_a["teacher_info"]["weights_sha"] == sha_a and rec_a["teacher_info"]["file"] == "A.pth"
    assert rec_a["teacher_info"]["key"] == f"imported-{sha_a[:12]}" and rec_a["teacher_info"]["source"] == "imported"

    # teacher B: another grid, trained afresh, not "1 already complete"
    code, out_b, _ = run_cli(capsys, "--results", str(res), "--teacher-ckpt", f"resnet8={tmp_path}/B.pth",
                             "--dry-run", *TINY)
    grid_b = out_b.split()[1]
    assert grid_b != grid_a
    code, _, err = run_cli(capsys, "--results", str(res), "--teacher-ckpt", f"resnet8={tmp_path}/B.pth", *TINY)
    assert code == 0 and "1 run, 0 already complete, 1 to run" in err
    rec_b = records.read_json(records.record_path(res / grid_b, "kd__resnet8-resnet8__s0"))
    assert rec_b["teacher_info"]["weights_sha"] == weights_fingerprint(b.state_dict()) != sha_a

    # the same weights saved in another layout (bare state dict) are the same teacher: A's results are reused
    torch.save(a.state_dict(), tmp_path / "A_bare.pth")
    code, _, err = run_cli(capsys, "--results", str(res), "--teacher-ckpt", f"resnet8={tmp_path}/A_bare.pth", *TINY)
    assert code == 0 and "1 run, 1 already complete, 0 to run" in err


def test_named_grid_with_another_teacher_moves_old_records_to_stale(capsys, tmp_path):
    _teacher_file(tmp_path / "A.pth", 1)
    _teacher_file(tmp_path / "B.pth", 2)
    res = tmp_path / "results"
    for name in ("A", "B"):
        code, _, err = run_cli(capsys, "--results", str(res), "--grid", "mine",
                               "--teacher-ckpt", f"resnet8={tmp_path}/{name}.pth", *TINY)
        assert code == 0 and "1 run, 0 already complete, 1 to run" in err, err
        runs = res / "mine" / "runs"
        if name == "A":
            first = {p.name: p.read_bytes() for p in runs.iterdir() if p.is_file() and p.suffix != ".lock"}
            first_curves = sorted(p.name for p in (res / "mine" / "tensorboard" / RID).iterdir())
    assert "1 record made under another protocol moved to" in err and "runs/stale" in err
    # every file of the old run moved, unchanged, to runs/stale/<its fingerprint>/ (the rerun overwrote none)
    [stale] = list((runs / "stale").iterdir())
    old = records.read_json(stale / f"{RID}.json")
    assert old["teacher_info"]["file"] == "A.pth" and stale.name == old["config"]["fingerprint"][:16]
    assert sorted(first) == sorted(p.name for p in stale.iterdir() if p.is_file()) == \
        [f"{RID}.best.pt", f"{RID}.json", f"{RID}.metrics.jsonl", f"{RID}.student.pt"]
    assert all((stale / name).read_bytes() == data for name, data in first.items())
    assert sorted(p.name for p in (stale / "tensorboard" / RID).iterdir()) == first_curves
    assert (runs / f"{RID}.student.pt").read_bytes() != first[f"{RID}.student.pt"]  # the rerun's own
    assert records.read_json(runs / f"{RID}.json")["teacher_info"]["file"] == "B.pth"
    assert count_stale(res / "mine") == 1


def test_trained_teacher_records_its_recipe_seed_and_epochs(capsys, tmp_path):
    code, _, err = run_cli(capsys, "--results", str(tmp_path), "--set", "teacher_train.epochs=1", *TINY)
    assert code == 0, err
    rec = next(records.iter_records(next(tmp_path.glob("digits-*"))))
    info = rec.teacher_info
    assert info["source"] == "trained" and info["seed"] == 0 and info["epochs"] == 1
    assert info["recipe"]["epochs"] == 1 and info["key"] and info["arch"] == "resnet8"


@pytest.mark.parametrize("argv,message", [
    (["--dataset", "cifar100", "--data-root", "{tmp}/nowhere"], "error: cifar100: dataset not found"),
    (["--teacher-ckpt", "resnet8={tmp}/junk.pth"], "error: teacher checkpoint {tmp}/junk.pth is unreadable"),
    (["--teacher-ckpt", "resnet8={tmp}/missing.pth"], "error: teacher checkpoint {tmp}/missing.pth not found"),
    (["--device", "cuda:0"], "error: --device cuda:0: CUDA is not available on this machine; use --device cpu"),
], ids=["missing-data", "unreadable-checkpoint", "missing-checkpoint", "absent-device"])
def test_dry_run_validates_what_needs_no_training(capsys, tmp_path, argv, message):
    if "cuda:0" in argv and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    (tmp_path / "junk.pth").write_bytes(b"\x00 not a checkpoint")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code, out, err = run_cli(capsys, "--results", str(tmp_path / "results"), "--dry-run", *TINY, *argv)
    assert code == 2 and out == ""
    assert err.strip().startswith(message.replace("{tmp}", str(tmp_path))), err
    assert not (tmp_path / "results").exists()


def test_best_epoch_weights_are_kept_beside_the_final_ones(capsys, tmp_path):
    code, _, err = run_cli(capsys, "--results", str(tmp_path), "--set", "teacher_train.epochs=1",
                           *TINY[:-4], "--epochs", "3", "--set", "train.lr=0.2", "--quiet", "--no-report")
    assert code == 0, err
    grid = next(p for p in tmp_path.iterdir() if p.name.startswith("digits"))
    rec = records.read_json(records.record_path(grid, "kd__resnet8-resnet8__s0"))
    best = torch.load(grid / "runs" / rec["weights_best"], weights_only=True)
    final = torch.load(grid / "runs" / rec["weights"], weights_only=True)
    assert best["epoch"] == rec["metrics"]["best_epoch"]
    # the best file holds the student as it was after its best epoch: evaluate it again
    from kdcore.data import load_dataset
    from kdcore.train import evaluate

    model = create_model("resnet8", num_classes=10)
    model.load_state_dict(best["student"])
    top1, _ = evaluate(model, load_dataset("digits"), torch.device("cpu"))
    assert top1 == rec["metrics"]["top1_best"]
    if rec["metrics"]["best_epoch"] == rec["metrics"]["epochs"]:
        assert all(torch.equal(best["student"][k], final["student"][k]) for k in final["student"])
