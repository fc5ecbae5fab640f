"""Tuned fairly: a validation split held out of the training set, and hyperparameter sweeps as a grid axis.

The split is stratified, seeded by a fixed seed only, disjoint from what is trained on, and recomputed
identically on resume; ``--val-fraction 0`` is today's protocol. A sweep expands into runs with readable,
stable, unique ids, checked before any work; the report's tuned table chooses on validation, never on test.
"""
from __future__ import annotations

import json

import pytest
import torch

from kdcore import checkpoints, records
from kdcore.data import load_dataset, stratified_split, with_validation
from benchmarks.grid import GridRunner, RunnerOptions, cohorts, expand
from benchmarks.run import build_parser, main, resolve
from reports import build_report

TINY = ["--pairs", "resnet8:resnet8", "--seeds", "0", "--epochs", "1", "--set", "teacher_train.epochs=1", "--quiet"]


def parse(tmp_path, *argv):
    return build_parser().parse_args(["--results", str(tmp_path / "results"), *argv])


def history_numbers(rec: dict) -> list[dict]:
    return [{k: v for k, v in h.items() if "time" not in k and k != "images_per_s"} for h in rec["history"]]


# ---------------------------------------------------------------------------- the split
def test_split_is_disjoint_stratified_and_seeded():
    full = load_dataset("digits")
    held = with_validation(full, 0.2)
    index = stratified_split(full.train_labels, 0.2)
    assert torch.equal(index, stratified_split(full.train_labels, 0.2))  # same indices twice
    assert not torch.equal(index, stratified_split(full.train_labels, 0.2, seed=1))  # the seed decides
    keep = torch.ones(full.num_train, dtype=torch.bool)
    keep[index] = False
    # what is trained on (the training tensors epoch_batches draws from) is exactly the rest
    assert torch.equal(held.train_images, full.train_images[keep])
    assert torch.equal(held.train_labels, full.train_labels[keep])
    assert torch.equal(held.val_images, full.train_images[index])
    assert torch.equal(held.val_labels, full.train_labels[index])
    assert set(index.tolist()).isdisjoint(torch.nonzero(keep).flatten().tolist())
    assert held.num_train + held.num_val == full.num_train
    seen = torch.cat([i for _, _, i in held.epoch_batches(64, torch.Generator().manual_seed(0), torch.device("cpu"))])
    assert sorted(seen.tolist()) == list(range(held.num_train))  # one pass covers the kept samples only
    for c in range(full.num_classes):  # per class, within 1 of the fraction
        n_c = int((full.train_labels == c).sum())
        v_c = int((held.val_labels == c).sum())
        assert abs(v_c - 0.2 * n_c) <= 1
    assert held.describe()["val_fraction"] == 0.2 and held.describe()["num_val"] == held.num_val
    assert with_validation(full, 0) is full


def test_val_fraction_zero_is_todays_grid(tmp_path, capsys):
    base = ["--methods", "kd,vanilla", "--pairs", "resnet8:resnet8", "--seeds", "0,1", "--epochs", "1"]
    cfg_a, cfg_b = resolve(parse(tmp_path, *base)), resolve(parse(tmp_path, *base, "--val-fraction", "0"))
    ra = GridRunner(cfg_a, RunnerOptions.from_namespace(parse(tmp_path, *base)))
    rb = GridRunner(cfg_b, RunnerOptions.from_namespace(parse(tmp_path, *base, "--val-fraction", "0")))
    assert ra.cfg["grid"] == rb.cfg["grid"]
    assert ra.teacher_keys == rb.teacher_keys and ra.data.describe() == rb.data.describe()
    specs_a, specs_b = expand(cfg_a), expand(cfg_b)
    assert [s.run_id for s in specs_a] == [s.run_id for s in specs_b] == \
        [f"{m}__resnet8-resnet8__s{s}" for s in (0, 1) for m in ("kd", "vanilla")]
    assert [ra.fingerprint_of(s) for s in specs_a] == [rb.fingerprint_of(s) for s in specs_b]
    # a split is part of the protocol: another grid, other fingerprints, another teacher
    args_c = parse(tmp_path, *base, "--val-fraction", "0.1")
    cfg_c = resolve(args_c)
    rc = GridRunner(cfg_c, RunnerOptions.from_namespace(args_c))
    assert rc.cfg["grid"] != ra.cfg["grid"] and rc.teacher_keys != ra.teacher_keys
    assert ra.fingerprint_of(specs_a[0]) != rc.fingerprint_of(expand(cfg_c)[0])


def test_split_is_recomputed_identically_on_resume(tmp_path, capsys, monkeypatch):
    argv = ["--methods", "kd", "--sweep", "kd.T=2,4", "--val-fraction", "0.2", "--pairs", "resnet8:resnet8",
            "--seeds", "0", "--epochs", "2", "--set", "teacher_train.epochs=1", "--quiet", "--no-report"]
    ref, res = tmp_path / "ref", tmp_path / "res"
    assert main(["--results", str(ref), "--grid", "g", *argv]) == 0
    real, saved = checkpoints.save_run, []

    def save_then_stop(*a, **k):  # both runs checkpoint after epoch 1, then the process is interrupted
        real(*a, **k)
        saved.append(1)
        if len(saved) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoints, "save_run", save_then_stop)
    assert main(["--results", str(res), "--grid", "g", *argv]) == 130
    monkeypatch.setattr(checkpoints, "save_run", real)
    capsys.readouterr()
    assert main(["--results", str(res), "--grid", "g", *argv]) == 0
    assert "cohort resnet8:resnet8 s0: 2 runs, 2 resumed: kd[T=2], kd[T=4] from ep 2/2\n" in capsys.readouterr().err
    for rid in ("kd[T=2]__resnet8-resnet8__s0", "kd[T=4]__resnet8-resnet8__s0"):
        a = records.read_json(records.record_path(ref / "g", rid))
        b = records.read_json(records.record_path(res / "g", rid))
        assert b["status"] == "complete" and all("val_top1" in h for h in b["history"])
        assert history_numbers(a) == history_numbers(b), rid


# ---------------------------------------------------------------------------- sweeps
def test_sweeps_expand_as_a_product_with_stable_unique_ids(tmp_path):
    argv = ["--methods", "vanilla,kd,crd+kd", "--pairs", "resnet8:resnet8", "--seeds", "0,1",
            "--sweep", "kd.T=2,4", "--sweep", "kd.alpha=0.5,1"]
    cfg = resolve(parse(tmp_path, *argv))
    specs = expand(cfg)
    ids = [s.run_id for s in specs]
    assert ids == [s.run_id for s in expand(resolve(parse(tmp_path, *argv)))]  # stable
    assert len(ids) == len(set(ids)) == 2 * (1 + 4 + 4)
    assert ids[:5] == ["vanilla__resnet8-resnet8__s0", "kd[T=2,alpha=0.5]__resnet8-resnet8__s0",
                       "kd[T=2,alpha=1]__resnet8-resnet8__s0", "kd[T=4,alpha=0.5]__resnet8-resnet8__s0",
                       "kd[T=4,alpha=1]__resnet8-resnet8__s0"]
    assert "crd+kd[kd.T=4,kd.alpha=0.5]__resnet8-resnet8__s1" in ids
    assert all(c.isalnum() or c in "._+-=,[]" for rid in ids for c in rid)  # filesystem-safe
    # the swept values reach each run's resolved hyperparameters; one cohort per (pair, seed) still
    resolved = cfg["resolved_methods"]["resnet8:resnet8"]
    assert resolved["kd[T=4,alpha=0.5]"]["kd"]["T"] == 4.0 and resolved["kd[T=4,alpha=0.5]"]["kd"]["alpha"] == 0.5
    assert resolved["crd+kd[kd.T=2,kd.alpha=1]"]["kd"]["T"] == 2.0
    assert list(cohorts(specs)) == [("resnet8:resnet8", 0), ("resnet8:resnet8", 1)]
    # a preset's [sweep] table expands the same way, and the command line replaces a key's values
    preset = tmp_path / "swept.toml"
    preset.write_text('dataset = "digits"\nmethods = ["kd"]\npairs = ["resnet8:resnet8"]\nseeds = [0]\n'
                      '[sweep]\n"kd.T" = [1.0, 8.0]\n')
    assert [s.label for s in expand(resolve(parse(tmp_path, "--preset", str(preset))))] == ["kd[T=1]", "kd[T=8]"]
    assert [s.label for s in expand(resolve(parse(tmp_path, "--preset", str(preset), "--sweep", "kd.T=3")))] == \
        ["kd[T=3]"]


@pytest.mark.parametrize("flags, message", [
    (["--sweep", "kd.T=2,-1"], "sweep kd.T: kd.T must be > 0"),
    (["--sweep", "kd.T=2,2.0"], "repeat"),
    (["--sweep", "kd.T"], "bad --sweep"),
    (["--sweep", "kd.nope=1"], "unknown hyperparameter kd.nope"),
    (["--sweep", "crd.nce_k=64"], "no method of this grid uses crd"),
    (["--sweep", "nosuch.T=1"], "unknown method 'nosuch'"),
    (["--sweep", "kd.T=[1,2]"], "numbers, booleans or strings"),
    (["--sweep", "train.lr=0.1,0.2"], "unknown method 'train'"),
    (["--val-fraction", "1"], "--val-fraction must be a number in [0, 1)"),
    (["--val-fraction", "-0.1"], "--val-fraction must be a number in [0, 1)"),
])
def test_bad_sweeps_and_fractions_exit_2_before_any_work(tmp_path, capsys, flags, message):
    results = tmp_path / "results"
    assert main(["--results", str(results), "--methods", "kd", *TINY, *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert not results.exists()


# ---------------------------------------------------------------------------- the report
def _write_grid(root, val_fraction: float | None, cells: dict[tuple[str, int], tuple[float, float]]):
    """A synthetic grid: kd swept over T = 2, 4 plus vanilla; cells: (label, seed) -> (test, val) top-1."""
    config = {"train": {"epochs": 1}}
    if val_fraction:
        config["val_fraction"] = val_fraction
    grid = {"name": root.name, "preset": "digits", "dataset": "digits", "methods": ["vanilla", "kd"],
            "pairs": ["resnet8:resnet8"], "seeds": [0, 1], "config": config,
            "variants": {"vanilla": [{"label": "vanilla", "sweep": {}}],
                         "kd": [{"label": "kd[T=2]", "sweep": {"kd.T": 2.0}},
                                {"label": "kd[T=4]", "sweep": {"kd.T": 4.0}}]}}
    records.write_json(root / "grid.json", grid)
    for (label, seed), (test, val) in cells.items():
        method = label.split("[")[0]
        entry = {"epoch": 1, "test_top1": test, "test_top5": 99.0}
        if val_fraction:
            entry["val_top1"] = val
        rec = {"schema": 1, "run_id": records.run_id(label, "resnet8", "resnet8", seed), "status": "complete",
               "method": method, "teacher": "resnet8", "student": "resnet8", "pair": "resnet8:resnet8",
               "seed": seed, "dataset": "digits", "preset": "digits", "config": {},
               "teacher_info": {"top1": 90.0}, "history": [entry],
               "metrics": {"top1_last": test, "top1_best": test, "best_epoch": 1, "epochs": 1}}
        if label != method:
            rec.update(variant=label, sweep={"kd.T": float(label[5:-1])})
        records.write_json(records.record_path(root, rec["run_id"]), rec)


# test and validation disagree: T=2 wins on test, T=4 on validation
CELLS = {("vanilla", 0): (70.0, 69.0), ("vanilla", 1): (71.0, 70.0),
         ("kd[T=2]", 0): (80.0, 60.0), ("kd[T=2]", 1): (82.0, 62.0),
         ("kd[T=4]", 0): (75.0, 77.0), ("kd[T=4]", 1): (76.0, 78.0)}


def test_tuned_table_chooses_on_validation_never_on_test(tmp_path):
    root = tmp_path / "g"
    _write_grid(root, 0.1, CELLS)
    text = build_report(root).read_text()
    tuned = text.split("**Tuned**")[1]
    kd_row = next(line for line in tuned.splitlines() if line.startswith("| kd "))
    # the val-best value, and its test number (bold: the best of the column), not the test-best's 81.00
    assert "**75.50 ± 0.71 (2)** [T=4]" in kd_row and "81.00" not in kd_row and "T=2" not in kd_row
    sens = text.split("**Sensitivity**")[1].split("**Tuned**")[0]
    assert "| T=2 " in sens and "81.00 ± 1.41 (2) · val 61.00 ± 1.41 (2)" in sens
    assert "| T=4 " in sens and "75.50 ± 0.71 (2) · val 77.50 ± 0.71 (2)" in sens
    assert build_report(root).read_text() == text  # byte-identical on rerun


def test_without_a_split_the_tuned_table_is_not_made(tmp_path):
    root = tmp_path / "g"
    _write_grid(root, None, CELLS)
    text = build_report(root).read_text()
    assert "## 10. Sweeps" in text and "| T=2 " in text
    tuned = text.split("**Tuned**")[1]
    assert "No tuned table: this grid has no validation split" in tuned and "| kd " not in tuned


def test_tiny_real_grid_with_sweep_and_split(tmp_path, capsys):
    results = tmp_path / "results"
    argv = ["--results", str(results), "--methods", "kd", "--sweep", "kd.T=2,4", "--val-fraction", "0.2", *TINY]
    assert main(argv) == 0
    (grid_dir,) = [p for p in results.iterdir() if p.name.startswith("digits-")]
    recs = {r.run_id: r for r in records.iter_records(grid_dir)}
    assert set(recs) == {"kd[T=2]__resnet8-resnet8__s0", "kd[T=4]__resnet8-resnet8__s0"}
    for rid, rec in recs.items():
        assert rec.status == "complete" and rec.config["val_fraction"] == 0.2
        assert rec.sweep == {"kd.T": 2.0 if "T=2" in rid else 4.0} and rec.variant == rid.split("__")[0]
        assert rec.config["method"]["kd"]["T"] == rec.sweep["kd.T"]
        assert "val_top1" in rec.history[-1] and "test_top1" in rec.history[-1]
        assert rec.metrics.val_top1_last == rec.history[-1]["val_top1"]
        assert rec.config["data"]["val_fraction"] == 0.2 and rec.config["data"]["num_val"] > 0
        assert sorted(rec.cost.cohort) == sorted(recs)  # one cohort: one teacher pass for both values
    grid = json.loads((grid_dir / "grid.json").read_text())
    assert [v["label"] for v in grid["variants"]["kd"]] == ["kd[T=2]", "kd[T=4]"]
    text = (grid_dir / "report.md").read_text()
    assert "## 10. Sweeps: sensitivity and tuned results" in text
    assert "**Sensitivity**" in text and "· val " in text
    tuned = text.split("**Tuned**")[1]
    assert "| kd " in tuned and ("[T=2]" in tuned or "[T=4]" in tuned)
    capsys.readouterr()
    assert main(argv) == 0 and "2 already complete" in capsys.readouterr().err
    assert (grid_dir / "report.md").read_text() == text
