"""The students' subset (issue 16, part 4): teachers learn from the whole training set, students from a
seeded, stratified fraction of it (``student_fraction``, the digits default's regime). The subset is the
same for every run, leaves the validation split and the test set whole, is part of the protocol (another
grid, the same teachers), and a bad value exits 2 before any work."""
from __future__ import annotations

import json

import pytest
import torch

from kdcore import records
from kdcore.data import STUDENT_SUBSET_SEED, for_students, load_dataset, stratified_split, with_validation
from benchmarks.grid import GridRunner, RunnerOptions, expand
from benchmarks.run import build_parser, main, resolve

TINY = ["--pairs", "resnet8:resnet8", "--seeds", "0", "--epochs", "1", "--set", "teacher_train.epochs=1", "--quiet"]


def parse(tmp_path, *argv):
    return build_parser().parse_args(["--results", str(tmp_path / "results"), *argv])


def test_subset_is_stratified_seeded_and_leaves_validation_and_test_whole():
    full = load_dataset("digits")
    # digits' training split has 131-137 images per class: round(0.05 * n) = 7 each, 70 in all
    assert torch.bincount(full.train_labels).tolist() == [133, 136, 133, 137, 136, 136, 136, 134, 131, 135]
    sub = for_students(full, 0.05)
    assert sub.num_train == 70 and torch.bincount(sub.train_labels).tolist() == [7] * 10
    index = stratified_split(full.train_labels, 0.05, seed=STUDENT_SUBSET_SEED)
    assert torch.equal(sub.train_images, full.train_images[index])
    assert torch.equal(sub.train_labels, full.train_labels[index])
    assert torch.equal(for_students(full, 0.05).train_images, sub.train_images)  # the same images every time
    assert torch.equal(sub.test_images, full.test_images) and torch.equal(sub.test_labels, full.test_labels)
    assert sub.describe() == {**full.describe(), "num_train": 70, "student_fraction": 0.05}
    assert for_students(full, 1) is full
    # with a validation split: the split is held out first (from teachers and students), the subset taken
    # from what is left, and the split stays whole
    held = with_validation(full, 0.2)
    both = for_students(held, 0.05)
    assert torch.equal(both.val_images, held.val_images) and both.num_val == held.num_val
    assert torch.equal(both.train_images, held.train_images[stratified_split(held.train_labels, 0.05, seed=1)])
    seen = torch.cat([i for _, _, i in sub.epoch_batches(16, torch.Generator().manual_seed(0), torch.device("cpu"))])
    assert sorted(seen.tolist()) == list(range(70))  # an epoch draws the subset only


def test_subset_is_part_of_the_protocol_and_keeps_the_teachers(tmp_path):
    base = ["--methods", "kd,vanilla", "--pairs", "resnet8:resnet8", "--seeds", "0", "--epochs", "1"]
    runners, cfgs = {}, {}
    for f in ("0.05", "0.1", "1"):
        args = parse(tmp_path, *base, "--student-fraction", f)
        cfgs[f] = resolve(args)
        runners[f] = GridRunner(cfgs[f], RunnerOptions.from_namespace(args))
    # teachers never see the fraction: one teacher for all three grids
    assert runners["0.05"].teacher_keys == runners["0.1"].teacher_keys == runners["1"].teacher_keys
    assert runners["0.05"].data.describe() == runners["1"].data.describe() == runners["1"].student_data.describe()
    # 0.1 of [133, 136, 133, 137, 136, 136, 136, 134, 131, 135] rounds to 13 or 14 (13.5: round half even)
    assert runners["0.05"].student_data.num_train == 70 and runners["0.1"].student_data.num_train == 136
    # students do: three grids, three fingerprints for the same run id
    assert len({r.cfg["grid"] for r in runners.values()}) == 3
    prints = {f: runners[f].fingerprint_of(expand(cfgs[f])[0]) for f in cfgs}
    assert len(set(prints.values())) == 3


def test_tiny_grid_trains_students_on_the_subset_and_teachers_on_all(tmp_path):
    results = tmp_path / "results"
    assert main(["--results", str(results), "--grid", "g", "--methods", "kd", "--student-fraction", "0.05",
                 *TINY]) == 0
    rec = records.read_json(records.record_path(results / "g", "kd__resnet8-resnet8__s0"))
    assert rec["status"] == "complete"
    assert rec["config"]["student_fraction"] == 0.05
    assert rec["config"]["data"]["num_train"] == 70 and rec["config"]["data"]["student_fraction"] == 0.05
    (teacher_json,) = (results / "teachers").rglob("*.json")
    teacher = json.loads(teacher_json.read_text())
    assert teacher["data"]["num_train"] == 1347 and "student_fraction" not in teacher["data"]
    grid = json.loads((results / "g" / "grid.json").read_text())
    assert grid["config"]["student_fraction"] == 0.05
    report = (results / "g" / "report.md").read_text()
    assert ("- **Student subset**: the students trained on 0.05 of the training set (stratified, seeded, the "
            "same images for every run); the teachers on all of it") in report


@pytest.mark.parametrize("flags, message", [
    (["--student-fraction", "0"], "--student-fraction must be a number in (0, 1]"),
    (["--student-fraction", "1.5"], "--student-fraction must be a number in (0, 1]"),
    (["--student-fraction", "-0.1"], "--student-fraction must be a number in (0, 1]"),
])
def test_bad_fraction_exits_2_before_any_work(tmp_path, capsys, flags, message):
    results = tmp_path / "results"
    assert main(["--results", str(results), "--methods", "kd", *TINY, *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert not results.exists()


def test_a_fraction_that_drops_a_class_is_refused(tmp_path, capsys):
    # 0.003 of 131-137 rounds to 0 images for every class: no student could learn anything
    results = tmp_path / "results"
    assert main(["--results", str(results), "--methods", "kd", *TINY, "--student-fraction", "0.003"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "student_fraction 0.003" in err and "choose a larger fraction" in err, err
