"""The runner's CLI: bad input gets one clear line and exit 2; a tiny grid runs end to end."""
from __future__ import annotations

import importlib
import json
import statistics

import pytest
import torch

from kdcore import records
from benchmarks import grid
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
    from kdcore.models import create_model

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

ONE = ["--methods", "kd", "--pairs", "resnet8:resnet8", "--seeds", "0", "--epochs", "1"]
BAD_INPUT += [(ONE + argv, message) for argv, message in [
    # recipe values SGD refuses (or trains on as NaN) only once the teacher's training has started
    (["--set", "train.lr=nan"], "error: train.lr must be a finite number > 0, got nan"),
    (["--set", "teacher_train.lr=inf"], "error: teacher_train.lr must be a finite number > 0, got inf"),
    (["--set", "train.momentum=-1"], "error: train.momentum must be a finite number >= 0, got -1.0"),
    (["--set", "train.weight_decay=-1"], "error: train.weight_decay must be a finite number >= 0, got -1.0"),
    (["--set", "train.lr_decay_rate=0"], "error: train.lr_decay_rate must be a finite number > 0, got 0.0"),
    (["--set", "train.eval_batch_size=0"], "error: train.eval_batch_size must be >= 1, got 0"),
    (["--set", 'train.lr_decay_epochs=["a"]'],
     "error: train.lr_decay_epochs must be a list of epochs >= 1 (the lr decays after each), e.g. [150, 180, 210], "
     "got ['a']"),
    # a [data] key the loader does not take was ignored without a word (and changed the grid's folder)
    (["--set", "data.foo=1"],
     "error: digits has no data option 'foo'; its options: image_size, test_fraction, augment, normalize "
     "(--set data.KEY=VALUE)"),
    (["--dataset", "cifar100", "--data-root", "/nonexistent/data", "--set", "data.image_size=16"],
     "error: cifar100 has no data option 'image_size'; its options: augment, normalize (--set data.KEY=VALUE)"),
    (["--set", "data.image_size=abc"], "error: digits: data.image_size must be an int (default 8), got 'abc'"),
    (["--set", "data.test_fraction=1"], "error: digits: data.test_fraction must be in (0, 1) (default 0.25), got 1"),
    # "> 0" lets inf through: the run failed on its first step, after the teacher's training
    (["--set", "kd.T=inf"], "error: kd.T must be a finite number > 0, got inf"),
    (["--sweep", "kd.T=1,inf"], "error: sweep kd.T: kd.T must be a finite number > 0, got inf"),
    # the same run id twice: both trained into one record, and the report (then every python -m reports) failed
    (["--methods", "kd,kd"], "error: methods names 'kd' twice (kd, kd); give each once"),
    (["--seeds", "0,0"], "error: seeds names 0 twice (0, 0); give each once"),
    (["--pairs", "resnet8:resnet8,resnet8:resnet8"],
     "error: pairs names 'resnet8:resnet8' twice (resnet8:resnet8, resnet8:resnet8); give each once"),
    # a top-level preset key: which flag sets it, or that only a preset file does
    (["--set", "seeds=[0,1]"], "error: bad --set 'seeds=[0,1]': seeds has its own flag, --seeds"),
    (["--set", "teacher_seed=5"], "error: bad --set 'teacher_seed=5': teacher_seed is a top-level preset key; set it "
                                  "in your own preset file (--preset FILE.toml)"),
    # flags that ran one CPU process without a word, or wrote outside --results, or raised
    (["--workers", "0"], "error: --workers must be >= 1 (one local worker process per shard), got 0"),
    (["--shards", "0", "--executor", "local"], "error: --shards must be >= 1 (array tasks), got 0"),
    (["--gpus", "x"], "error: bad --gpus 'x': expected comma-separated GPU ids, e.g. 0,1,2,3"),
    (["--grid", "../elsewhere"], "error: bad --grid '../elsewhere': a folder name under --results, without '/', "
                                 "e.g. --grid tiny"),
    (["--teacher-ckpt", "resnet8={tmp}"], "error: teacher checkpoint {tmp} is a folder; pass the checkpoint file in "
                                          "it, e.g. {tmp}/ckpt_epoch_240.pth (--teacher-ckpt ARCH=PATH)"),
    (["--teacher-dir", "{tmp}/junk.pth"], "error: --teacher-dir {tmp}/junk.pth is a file, not a folder; choose a "
                                          "folder (default: <results>/teachers)"),
]]

EMPTY = "; give comma-separated values, e.g. "
BAD_INPUT += [(ONE + argv, message) for argv, message in [
    # an empty list ran the preset's own (and, stopped, left its locks and a teacher behind)
    (["--methods", ""], f"error: --methods '' lists nothing{EMPTY}--methods vanilla,kd, or leave the flag out"),
    (["--methods", ","], f"error: --methods ',' lists nothing{EMPTY}--methods vanilla,kd, or leave the flag out"),
    (["--pairs", ""], f"error: --pairs '' lists nothing{EMPTY}--pairs resnet32x4:resnet8x4, or leave the flag out"),
    (["--seeds", ""], f"error: --seeds '' lists nothing{EMPTY}--seeds 0,1,2, or leave the flag out"),
    (["--seeds", " , "], f"error: --seeds ' , ' lists nothing{EMPTY}--seeds 0,1,2, or leave the flag out"),
    # the same for a flag that names one thing: never its default instead
    (["--dataset", ""], "error: --dataset is empty; give a value, or leave the flag out"),
    (["--preset", ""], "error: --preset is empty; give a value, or leave the flag out"),
    (["--data-root", ""], "error: --data-root is empty; give a value, or leave the flag out"),
    (["--teacher-dir", ""], "error: --teacher-dir is empty; give a value, or leave the flag out"),
    (["--results", " "], "error: --results is empty; give a value, or leave the flag out"),
    # a bad value names the flag or key it was given as, and the value
    (["--epochs", "-3"], "error: --epochs must be >= 1, got -3"),
    (["--epochs", "0"], "error: --epochs must be >= 1, got 0"),
    (["--seeds", "0,-1"], "error: --seeds must be non-negative integers, got '0,-1'"),
    (["--set", "train.epochs=0"], "error: train.epochs must be >= 1, got 0"),
    (["--set", "teacher_train.epochs=-1"], "error: teacher_train.epochs must be >= 1, got -1"),
    (["--set", "train.batch_size=0"], "error: train.batch_size must be >= 1, got 0"),
    (["--set", "teacher_train.batch_size=0"], "error: teacher_train.batch_size must be >= 1, got 0"),
    (["--set", "train.lr=0"], "error: train.lr must be a finite number > 0, got 0.0"),
    (["--set", "train.lr=-0.1"], "error: train.lr must be a finite number > 0, got -0.1"),
    (["--set", "train.lr_by_student.resnet8=0"], "error: train.lr_by_student.resnet8 must be a finite number > 0, "
                                                 "got 0.0"),
    (["--set", "teacher_train.lr_by_student.resnet8=-1"],
     "error: teacher_train.lr_by_student.resnet8 must be a finite number > 0, got -1.0"),
    (["--set", "teacher_train.lr_by_student.resnet8=x"],
     "error: teacher_train.lr_by_student.resnet8 must be a float, got 'x'"),
]]


PRESET = 'dataset = "digits"\nmethods = ["kd"]\npairs = ["resnet8:resnet8"]\nseeds = [0]\n'
# a preset file of the wrong shape: each raised a TypeError or AttributeError, or ran an empty grid whose report
# then failed, or was read letter by letter ("unknown method 'k'")
BAD_PRESETS = [
    (PRESET.replace('["kd"]', '"kd"'), 'error: methods must be a non-empty list, e.g. methods = ["vanilla", "kd"], '
                                       "got 'kd'"),
    (PRESET.replace('["kd"]', "[]"), 'error: methods must be a non-empty list, e.g. methods = ["vanilla", "kd"], got []'),
    (PRESET.replace('["resnet8:resnet8"]', '"resnet8:resnet8"'),
     'error: pairs must be a non-empty list, e.g. pairs = ["resnet20:resnet8"], got \'resnet8:resnet8\''),
    (PRESET.replace("[0]", "0"), "error: seeds must be a non-empty list, e.g. seeds = [0, 1, 2], got 0"),
    (PRESET.replace("[0]", "[]"), "error: seeds must be a non-empty list, e.g. seeds = [0, 1, 2], got []"),
    (PRESET + "teacher_seed = -1\n", "error: teacher_seed must be a non-negative integer, got -1"),
    (PRESET + 'data = "x"\n', "error: data must be a table ([data] in a preset, --set data.KEY=VALUE), got 'x'"),
    (PRESET + "train = 5\n", "error: train must be a table ([train] in a preset, --set train.KEY=VALUE), got 5"),
    (PRESET + "method = 3\n", "error: method must be [method.<name>] tables, e.g. [method.kd] T = 2.0, got 3"),
    (PRESET + "[train]\nlr_by_student = 3\n", "error: train.lr_by_student must be a table of student: lr, e.g. "
                                               "[train.lr_by_student] MobileNetV2 = 0.01, got 3"),
]


@pytest.mark.parametrize("text,message", BAD_PRESETS, ids=[str(i) for i in range(len(BAD_PRESETS))])
def test_bad_preset_file_is_one_clear_line_and_exit_2(capsys, tmp_path, text, message):
    (tmp_path / "p.toml").write_text(text)
    before = tree(tmp_path)
    code, _, err = run_cli(capsys, "--results", str(tmp_path), "--preset", str(tmp_path / "p.toml"), *TINY)
    assert code == 2 and err == message.replace("{tmp}", str(tmp_path)) + "\n"
    assert tree(tmp_path) == before


def test_missing_preset_file_says_file_not_found(capsys, tmp_path):
    code, _, err = run_cli(capsys, "--results", str(tmp_path), "--preset", str(tmp_path / "mine.toml"), *TINY)
    assert code == 2 and err.startswith(f"error: preset file {tmp_path / 'mine.toml'} not found; check the path, or "
                                        f"name a preset: cifar10, cifar100, digits")
    assert not any(tmp_path.iterdir())


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


def test_gpus_without_cuda_is_a_clear_error(capsys, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, _, err = run_cli(capsys, "--results", str(tmp_path), "--gpus", "0", *TINY)
    assert code == 2 and err == ("error: --gpus 0: CUDA is not available on this machine; use --workers N for CPU "
                                 "worker processes\n")
    assert not any(tmp_path.iterdir())  # nothing trained, nothing written


def test_slurm_without_slurm_is_a_clear_error(capsys, tmp_path):
    import shutil

    if shutil.which("srun"):
        pytest.skip("this machine has Slurm")
    code, _, err = run_cli(capsys, "--results", str(tmp_path), "--executor", "slurm", *TINY)
    assert code == 2 and err == ("error: --executor slurm: no Slurm on this machine (srun not found); submit from a "
                                 "Slurm login node, or use --workers N here\n")
    assert not any(tmp_path.iterdir())


def test_bad_flag_is_one_line_not_the_usage(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--amp", "fp16"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == ("error: argument --amp: invalid choice: 'fp16' (choose from 'auto', 'bf16', "
                                       "'fp32'); see python -m benchmarks.run --help\n")
    with pytest.raises(SystemExit) as exit_info:  # resuming needs no flag: say so
        main(["--resume"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == ("error: unrecognized arguments: --resume (no flag needed: rerun the same "
                                       "command; complete runs are skipped, interrupted ones resume); see python -m "
                                       "benchmarks.run --help\n")


def test_report_of_a_damaged_or_wrong_folder_is_one_line(capsys, tmp_path):
    from reports.__main__ import main as report_main

    code, _, err = run_cli(capsys, "--results", str(tmp_path), "--grid", "g", "--methods", "kd", "--seeds", "0", *TINY)
    assert code == 0, err
    # the results root instead of a grid folder: name the grids it holds
    assert report_main([str(tmp_path)]) == 2
    assert capsys.readouterr().err == (f"error: {tmp_path}: no grid.json and no run records under runs/; it holds "
                                       f"the grids g: pass one, e.g. python -m reports {tmp_path / 'g'}\n")
    # a folder that does not exist (a typo): say so
    assert report_main([str(tmp_path / "gg")]) == 2
    assert capsys.readouterr().err == (f"error: {tmp_path / 'gg'}: no such folder; pass a grid's folder, "
                                       f"<results>/<grid> (python -m benchmarks.run prints it: 'grid NAME: ... -> "
                                       f"FOLDER')\n")
    # a grid.json written before duplicates were refused lists a method twice: the report still builds
    grid_json = tmp_path / "g" / "grid.json"
    grid_json.write_text(grid_json.read_text().replace('"methods": [\n    "kd"\n  ]', '"methods": ["kd", "kd"]'))
    assert json.loads(grid_json.read_text())["methods"] == ["kd", "kd"]
    assert report_main([str(tmp_path / "g")]) == 0
    capsys.readouterr()
    # a --published table that is missing or lacks columns: named, even for a grid that would not read it
    report = (tmp_path / "g" / "report.md").read_bytes()
    assert report_main([str(tmp_path / "g"), "--published", str(tmp_path / "nope.csv")]) == 2
    assert capsys.readouterr().err == (f"error: --published {tmp_path / 'nope.csv'}: [Errno 2] No such file or "
                                       f"directory: '{tmp_path / 'nope.csv'}'; expected a CSV with columns "
                                       f"teacher,student,method,top1[,protocol,source]\n")
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    assert report_main([str(tmp_path / "g"), "--published", str(tmp_path / "bad.csv")]) == 2
    assert capsys.readouterr().err == (f"error: --published {tmp_path / 'bad.csv'}: published table lacks columns "
                                       f"['method', 'student', 'teacher', 'top1']; expected a CSV with columns "
                                       f"teacher,student,method,top1[,protocol,source]\n")
    assert (tmp_path / "g" / "report.md").read_bytes() == report
    # grid.json and every record damaged: one line, exit 2, no traceback, nothing rewritten
    (tmp_path / "g" / "grid.json").write_text('{"na')
    for path in (tmp_path / "g" / "runs").glob("*.json"):
        path.write_text('{"run_id": "kd')
    before = tree(tmp_path)
    assert report_main([str(tmp_path / "g")]) == 2
    assert capsys.readouterr().err == (f"error: {tmp_path / 'g'}: grid.json is unreadable or incomplete and none of "
                                       f"the 1 files under runs/ is a readable run record; rerun the grid's python -m "
                                       f"benchmarks.run command to redo them\n")
    assert tree(tmp_path) == before


@pytest.mark.parametrize("argv", [["import", "{tmp}"], ["forget", "resnet8"]])
def test_teachers_cli_names_a_misspelt_dataset(capsys, tmp_path, argv):
    from benchmarks.teachers import main as teachers_main

    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert teachers_main([*argv, "--dataset", "cifar1000", "--results", str(tmp_path)]) == 2
    assert capsys.readouterr().err == ("error: unknown dataset 'cifar1000'; known datasets: digits, cifar10, cifar100, "
                                       "imagefolder, MNIST, FashionMNIST\n")
    assert not any(tmp_path.iterdir())


def test_failed_download_names_the_download(capsys, tmp_path, monkeypatch):
    import urllib.error

    import torchvision.datasets.cifar

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive", offline)
    data = tmp_path / "data"
    code, _, err = run_cli(capsys, "--results", str(tmp_path / "r"), "--dataset", "cifar10", "--data-root", str(data),
                           "--download", "--methods", "kd", "--seeds", "0", *TINY)
    assert code == 2 and err == (f"error: cifar10: --download failed (URLError: <urlopen error [Errno -2] Name or "
                                 f"service not known>); check this machine's internet access, or fetch the dataset "
                                 f"elsewhere and extract it under {data}\n")  # not "could not read the files"
    assert not (tmp_path / "r").exists()


def test_image_folder_without_classes_or_with_a_bad_image_is_one_line(capsys, tmp_path):
    # both raised tracebacks: torchvision's FileNotFoundError, and PIL's error during the teacher's training
    data = tmp_path / "data"
    for split in ("train", "val"):
        (data / split).mkdir(parents=True)
    argv = ["--results", str(tmp_path / "r"), "--dataset", "imagefolder", "--data-root", str(data),
            "--student-fraction", "1", "--set", "data.workers=0", "--set", "data.image_size=8", "--methods", "kd",
            "--seeds", "0", *TINY]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and err == (f"error: imagefolder: Couldn't find any class folder in {data / 'train'}; pass "
                                 f"--data-root DIR with DIR/train/<class>/ and DIR/val/<class>/ image folders\n")
    for split in ("train", "val"):
        (data / split / "a").mkdir()
        (data / split / "a" / "x.png").write_bytes(b"not an image")
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and err.startswith(f"error: imagefolder: cannot read image {data / 'train' / 'a' / 'x.png'} "
                                        f"(UnidentifiedImageError: ") and err.endswith("; replace or remove the file\n")
    assert not (tmp_path / "r").exists()  # nothing trained, nothing written


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


def test_diverging_teacher_names_its_learning_rate(capsys, tmp_path):
    # --set train.lr reaches the teacher too: its failure says which lr it trained at and how to set its own
    code, _, err = run_cli(capsys, "--results", str(tmp_path), "--methods", "kd", "--seeds", "0", "--grid", "t",
                           "--set", "train.lr=1e30", *TINY)
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert lines == ["error: teacher resnet8 failed to train: teacher:resnet8: loss is not finite at epoch 1, step 1 "
                     "(ce=nan); lower the learning rate or the method's loss weights; the teacher trained at lr 1e+30 "
                     "([train] with [teacher_train] on top): --set teacher_train.lr=... sets its own"]
    assert not list((tmp_path / "t" / "runs").glob("*.json")) and not list(tmp_path.glob("teachers/*/*.pt"))


def test_changed_protocol_gets_its_own_grid(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "--dry-run")
    assert "grid digits (" in out
    code, out, _ = run_cli(capsys, "--dry-run", "--epochs", "3")
    assert "grid digits-" in out  # never mixes records made under another protocol


@pytest.mark.parametrize("module,argv,message", [
    ("reports", [], "error: the following arguments are required: results_dir; see python -m reports --help"),
    ("benchmarks.teachers", ["import"],
     "error: the following arguments are required: DIR; see python -m benchmarks.teachers import --help"),
    ("benchmarks.speed", ["--bogus"], "error: unrecognized arguments: --bogus; see python -m benchmarks.speed --help"),
])
def test_every_command_answers_a_bad_flag_in_one_line(module, argv, message, capsys):
    """Not argparse's usage block: the one line every other bad input gets, and exit 2."""
    main = importlib.import_module(module + (".__main__" if module == "reports" else "")).main
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and capsys.readouterr().err == message + "\n"


SPEED_FAST = ["--quick", "--steps", "1", "--warmup", "0", "--repeats", "1", "--no-memory"]


@pytest.mark.parametrize("module,argv,message", [
    ("benchmarks.teachers", ["import", "", "--dataset", "digits"],
     "error: DIR is empty; pass the folder holding <arch>_vanilla/ (RepDistiller's save/models/ or mdistiller's "
     "extracted cifar_teachers/)"),
    ("benchmarks.teachers", ["import", ".", "--dataset", "digits", "--teacher-dir", ""],
     "error: --teacher-dir is empty; give a value, or leave the flag out"),
    ("benchmarks.teachers", ["import", ".", "--dataset", "digits", "--data-root", ""],
     "error: --data-root is empty; give a value, or leave the flag out"),
    ("benchmarks.teachers", ["forget", "resnet8", "--dataset", "digits", "--results", ""],
     "error: --results is empty; give a value, or leave the flag out"),
    ("benchmarks.speed", ["--methods", ""],
     "error: --methods '' lists nothing; give comma-separated values, e.g. --methods vanilla,kd, or leave the flag "
     "out"),
    ("benchmarks.speed", ["--methods", ","],
     "error: --methods ',' lists nothing; give comma-separated values, e.g. --methods vanilla,kd, or leave the flag "
     "out"),
    ("benchmarks.speed", ["--methods", "vanilla", *SPEED_FAST, "--steps", "0"], "error: --steps must be >= 1, got 0"),
    ("benchmarks.speed", ["--methods", "vanilla", *SPEED_FAST, "--warmup", "-2"],
     "error: --warmup must be >= 0, got -2"),
    ("benchmarks.speed", ["--methods", "vanilla", *SPEED_FAST, "--batch-size", "0"],
     "error: --batch-size must be >= 1, got 0"),
    ("benchmarks.speed", ["--methods", "vanilla", *SPEED_FAST, "--out", ""],
     "error: --out is empty; give a value, or leave the flag out"),
    ("benchmarks.speed", ["--methods", "vanilla", *SPEED_FAST, "--dataset", "digits", "--data-root", ""],
     "error: --data-root is empty; give a value, or leave the flag out"),
])
def test_other_commands_refuse_an_empty_value(module, argv, message, capsys, tmp_path, monkeypatch):
    """An empty value is an error naming the flag, never the flag's default (or the current folder) instead;
    nothing is written, here or under the defaults' folders."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "resnet8_vanilla").mkdir()  # an import folder, so that no other check answers first
    torch.save({}, tmp_path / "resnet8_vanilla" / "ckpt_epoch_240.pth")
    before = tree(tmp_path)
    assert importlib.import_module(module).main(argv) == 2
    assert capsys.readouterr().err == message + "\n"
    assert tree(tmp_path) == before


def test_a_method_that_cannot_be_built_is_one_line_before_any_training(tmp_path, capsys, monkeypatch):
    """A build failure other than PairNotSupported (a user's method with a bug, a model it cannot read) stops the
    grid with one line naming the method and pair, exit 2, before a teacher trains or a file is written."""
    def broken(spec, *args, **kwargs):
        if spec.method == "at":
            raise ValueError("needs four stages, got three")
        return real(spec, *args, **kwargs)

    real = grid.build_student
    monkeypatch.setattr(grid, "build_student", broken)
    code = main(["--results", str(tmp_path), "--methods", "kd,at", "--pairs", "resnet8:resnet8", "--seeds", "0",
                 "--epochs", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["error: at cannot be built on resnet8:resnet8: needs four stages, got three (a "
                                 "method that cannot run on a pair raises methods.PairNotSupported: the table "
                                 "says n/a)"]
    assert list(tmp_path.iterdir()) == []
