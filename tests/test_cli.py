"""The runner's CLI: bad input gets one clear line and exit 2; a tiny grid runs end to end."""
from __future__ import annotations

import json
import statistics

import pytest
import torch

from benchmarks import records
from benchmarks.run import main

TINY = ["--pairs", "resnet8:resnet8", "--epochs", "1", "--set", "teacher_train.epochs=1", "--quiet"]


def run_cli(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


BAD_INPUT = [
    (["--methods", "kd,hinton"], "error: unknown method 'hinton'; known methods: "),
    (["--pairs", "resnet20:resnet9"], "error: unknown model 'resnet9'; known models: "),
    (["--pairs", "resnet20"], "error: bad pair 'resnet20': expected teacher:student"),
    (["--dataset", "mnist"], "error: unknown dataset 'mnist'; known datasets: digits, cifar10, cifar100"),
    (["--preset", "imagenet21k"], "error: unknown preset 'imagenet21k'; known presets: cifar10, cifar100, digits"),
    (["--set", "kd.temperature=2"], "error: unknown hyperparameter kd.temperature; kd has: T, alpha, gamma"),
    (["--set", "kd.T=hot"], "error: kd.T must be a float (default 4.0), got 'hot'"),
    (["--set", "triplet.negatives=random"], "error: triplet.negatives must be one of dataset, batch"),
    (["--set", "train.epochs=two"], "error: train.epochs must be an int, got 'two'"),
    (["--set", "train.nesterov=true"], "error: unknown train keys ['nesterov']"),
    (["--set", "foo.bar=1"], "error: bad --set 'foo.bar=1': 'foo' is neither train"),
    (["--set", "epochs"], "error: bad --set 'epochs': expected section.key=value"),
    (["--seeds", "0,one"], "error: --seeds must be comma-separated integers"),
    (["--dataset", "cifar100", "--data-root", "/nonexistent/data", "--no-report"],
     "error: cifar100: dataset not found or corrupted under /nonexistent/data/cifar-100-python"),
    (["--teacher-ckpt", "resnet8=/nonexistent/ckpt.pth", "--pairs", "resnet8:resnet8"],
     "error: teacher checkpoint /nonexistent/ckpt.pth not found"),
    # a typo in the architecture would otherwise train a fresh teacher without a word
    (["--teacher-ckpt", "resnet32=/nonexistent/ckpt.pth", "--pairs", "resnet8:resnet8,resnet20:resnet8"],
     "error: bad --teacher-ckpt 'resnet32=/nonexistent/ckpt.pth': no pair uses resnet32; pairs use resnet8, resnet20"),
    (["--teacher-ckpt", "resnet8", "--pairs", "resnet8:resnet8"], "error: bad --teacher-ckpt 'resnet8': expected ARCH=PATH"),
]


def _write_checkpoints(tmp_path):
    from benchmarks.models import create_model

    torch.save({"model": create_model("resnet8", num_classes=100).state_dict()}, tmp_path / "c100.pth")
    (tmp_path / "junk.pth").write_bytes(b"\x00 not a checkpoint")


BAD_INPUT += [
    # a CIFAR-100 teacher for the 10-class digits: incompatible class counts
    (["--teacher-ckpt", "resnet8={tmp}/c100.pth", "--pairs", "resnet8:resnet8", "--epochs", "1"],
     "error: {tmp}/c100.pth: shapes differ from CifarResNet at fc.weight ((100, 64) vs (10, 64)); "
     "check the architecture name and the class count"),
    (["--teacher-ckpt", "resnet8={tmp}/junk.pth", "--pairs", "resnet8:resnet8", "--epochs", "1"],
     "error: teacher checkpoint {tmp}/junk.pth is unreadable"),
]


@pytest.mark.parametrize("argv,message", BAD_INPUT, ids=[" ".join(a) for a, _ in BAD_INPUT])
def test_bad_input_is_one_clear_line_and_exit_2(capsys, tmp_path, argv, message):
    _write_checkpoints(tmp_path)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    message = message.replace("{tmp}", str(tmp_path))
    before = tree(tmp_path)
    code, out, err = run_cli(capsys, "--results", str(tmp_path), "--quiet", *argv)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == [lines[-1]] and lines[-1].startswith(message), lines  # no header before the error
    assert tree(tmp_path) == before  # failed validation leaves the results folder as it was


def tree(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else b"<dir>") for p in root.rglob("*")}


def test_no_cuda_is_a_clear_error(capsys, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, _, err = run_cli(capsys, "--results", str(tmp_path), "--device", "cuda", *TINY)
    assert code == 2 and "CUDA is not available on this machine; use --device cpu" in err


def test_unwritable_results_dir(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code, _, err = run_cli(capsys, "--results", str(blocker / "sub"), *TINY)
    assert code == 2 and "is not writable" in err and "--results DIR" in err


def test_dry_run_and_list(capsys):
    code, out, _ = run_cli(capsys, "--dry-run", "--methods", "kd,crd+kd", "--seeds", "0,1")
    assert code == 0
    assert "grid digits (" in out and ": 8 runs" in out  # 2 methods x 2 pairs x 2 seeds; same protocol
    assert "trained as 4 cohorts (one per pair and seed" in out
    assert "crd+kd__wrn_16_2-wrn_16_1__s1" in out
    code, out, _ = run_cli(capsys, "--dry-run", "--methods", "kd", "--seeds", "0,1", "--cohort")
    assert code == 0 and "trained as 4 cohorts" in out  # --cohort is the default, spelled out
    code, out, _ = run_cli(capsys, "--dry-run", "--methods", "kd", "--no-cohort")
    assert code == 0 and "trained one run at a time (--no-cohort)" in out
    with pytest.raises(SystemExit) as exit_info:  # argparse: usage, then the clash, exit 2
        main(["--dry-run", "--cohort", "--no-cohort"])
    assert exit_info.value.code == 2
    assert "argument --no-cohort: not allowed with argument --cohort" in capsys.readouterr().err
    code, out, _ = run_cli(capsys, "--list")
    assert code == 0 and "triplet" in out and "resnet32x4" in out and "digits" in out and "cifar100" in out


def test_tiny_grid_end_to_end_records_and_report(capsys, tmp_path):
    argv = ["--results", str(tmp_path), "--methods", "vanilla,kd", "--seeds", "0,1", "--grid", "tiny", *TINY]
    code, _, err = run_cli(capsys, *argv)
    assert code == 0, err
    grid = tmp_path / "tiny"
    recs = {r.run_id: r for r in records.iter_records(grid)}
    assert set(recs) == {f"{m}__resnet8-resnet8__s{s}" for m in ("vanilla", "kd") for s in (0, 1)}
    for r in recs.values():
        assert r.status == "complete" and r.metrics.epochs == 1
        assert r.config["train"]["epochs"] == 1 and r.config["data"]["name"] == "digits"
        assert r.env["torch"] == torch.__version__ and r.teacher_info["top1"] is not None
        lines = (grid / "runs" / f"{r.run_id}.metrics.jsonl").read_text().splitlines()
        assert [json.loads(line)["test_top1"] for line in lines] == [r.metrics.top1_last]
    assert recs["kd__resnet8-resnet8__s0"].config["method"] == {"kd": {"T": 4.0, "gamma": 0.1, "alpha": 0.9}}
    # the report's cell is the mean and std over seeds of the records' last-epoch top-1
    kd = [recs[f"kd__resnet8-resnet8__s{s}"].metrics.top1_last for s in (0, 1)]
    cell = f"{statistics.mean(kd):.2f} ± {statistics.stdev(kd):.2f} (2)"
    report = (grid / "report.md").read_text()
    kd_row = next(line for line in report.splitlines() if line.startswith("| kd "))
    assert cell in kd_row
    teacher_row = next(line for line in report.splitlines() if line.startswith("| teacher "))
    assert f"{recs['kd__resnet8-resnet8__s0'].teacher_info['top1']:.2f}" in teacher_row
    # a second invocation skips complete runs and leaves their records byte for byte
    before = {p.name: p.read_bytes() for p in (grid / "runs").glob("*.json")}
    code, _, err = run_cli(capsys, *argv)
    assert code == 0 and "4 already complete, 0 to run" in err
    assert before == {p.name: p.read_bytes() for p in (grid / "runs").glob("*.json")}
    # a new seed in the same grid reuses the cached teacher instead of training it again
    code, _, err = run_cli(capsys, *argv[:-len(TINY)], "--seeds", "2", *TINY)
    assert code == 0 and "teacher resnet8: cached" in err and "training" not in err
    grid_json = json.loads((grid / "grid.json").read_text())
    assert grid_json["seeds"] == [0, 1, 2]  # the grid widens, earlier runs stay in the report


def test_diverging_runs_are_recorded_and_exit_1(capsys, tmp_path):
    code, _, err = run_cli(capsys, "--results", str(tmp_path), "--methods", "kd", "--grid", "nan",
                           "--set", "train.lr=1e30", "--set", "teacher_train.lr=0.05", *TINY)
    assert code == 1
    assert "FAILED: DivergenceError" in err and "loss is not finite at epoch 1" in err
    rec = records.read_json(records.record_path(tmp_path / "nan", "kd__resnet8-resnet8__s0"))
    assert rec["status"] == "failed" and rec["error"]["type"] == "DivergenceError" and rec["error"]["epoch"] == 1
    assert "kd__resnet8-resnet8__s0" in (tmp_path / "nan" / "report.md").read_text()


def test_changed_protocol_gets_its_own_grid(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "--dry-run")
    assert "grid digits (" in out
    code, out, _ = run_cli(capsys, "--dry-run", "--epochs", "3")
    assert "grid digits-" in out  # never mixes records made under another protocol
