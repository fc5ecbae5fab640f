"""``train.eval_every`` (issue 26): the test set is evaluated after every k-th epoch and always after the last
(of each pre-training stage too). Training is the same bits either way; the entries in between carry no test
keys; the record's best epoch, the best weights, the curves and the report read only the evaluated epochs.
"""
from __future__ import annotations

import json

import pytest
import torch

from kdcore import records
from kdcore.config import ConfigError, student_recipe
from kdcore.curves import scalars
from kdcore.data import InMemoryData, load_dataset
from benchmarks.grid import probe
from kdcore.models import create_model
from benchmarks.run import main
from kdcore.train import StudentRun, freeze, seed_for, train_cohort
from kdcore.recipe import Recipe, evaluated
from methods import BuildContext, build_method

CPU = torch.device("cpu")
TEST_KEYS = {"test_top1", "test_top5", "test_ece", "test_agreement", "test_kl_teacher"}


@pytest.fixture(scope="module")
def data() -> InMemoryData:
    d = load_dataset("digits")
    return InMemoryData("digits-slice", d.train_images[:128], d.train_labels[:128], d.test_images[:64],
                        d.test_labels[:64], 10, d.mean, d.std, pad=1, flip=False)


def trained(method: str, data, eval_every: int, epochs: int = 5) -> StudentRun:
    torch.manual_seed(0)
    teacher = freeze(create_model("resnet8", num_classes=10))
    torch.manual_seed(seed_for(0, "init", "resnet8"))
    model = create_model("resnet8", num_classes=10)
    ctx = BuildContext(probe(model, data.input_shape, CPU, True), probe(teacher, data.input_shape, CPU, True),
                       10, data.train_labels)
    torch.manual_seed(seed_for(0, "method", method))
    run = StudentRun(method, model, build_method(method, ctx, {"ab": {"init_epochs": 3}}),
                     Recipe(epochs=epochs, batch_size=32, lr=0.05, lr_decay_epochs=[4], eval_every=eval_every), 0)
    train_cohort([run], data, CPU, teacher=teacher, data_generator=torch.Generator().manual_seed(1))
    return run


def test_evaluated_epochs_are_every_kth_and_the_last():
    r = Recipe(epochs=7, eval_every=3)
    assert [e + 1 for e in range(7) if r.evaluates(e, 7)] == [3, 6, 7]
    assert [e + 1 for e in range(6) if r.evaluates(e, 6)] == [3, 6]
    assert [e + 1 for e in range(2) if Recipe(eval_every=5).evaluates(e, 2)] == [2]
    assert all(Recipe().evaluates(e, 4) for e in range(4))


def test_skipped_epochs_train_the_same_bits_and_carry_no_test_keys(data):
    every = trained("kd", data, eval_every=1)
    sparse = trained("kd", data, eval_every=2)
    for k, v in every.model.state_dict().items():
        assert torch.equal(v, sparse.model.state_dict()[k]), k
    assert [h["epoch"] for h in sparse.history] == [1, 2, 3, 4, 5]
    assert [bool(TEST_KEYS & set(h)) for h in sparse.history] == [False, True, False, True, True]
    assert [h["epoch"] for h in evaluated(sparse.history)] == [2, 4, 5]
    for a, b in zip(every.history, sparse.history):  # the evaluated epochs measure the same numbers
        assert a["loss"] == b["loss"]
        if "test_top1" in b:
            assert {k: a[k] for k in TEST_KEYS} == {k: b[k] for k in TEST_KEYS}
    # a skipped epoch's curves hold its training scalars and no test tag
    assert "test/top1" not in scalars(sparse.history[0]) and "loss/total" in scalars(sparse.history[0])
    assert scalars(sparse.history[1])["test/top1"] == sparse.history[1]["test_top1"]


def test_a_pre_training_stage_evaluates_its_own_last_epoch(data):
    run = trained("ab", data, eval_every=2, epochs=3)
    staged = [(h.get("stage"), h["epoch"], "test_top1" in h) for h in run.history]
    assert staged == [("init", 1, False), ("init", 2, True), ("init", 3, True),
                      (None, 1, False), (None, 2, True), (None, 3, True)]


def test_the_recipe_keeps_its_old_identity_at_every_epoch():
    """At its default the field is left out of the recipe's dict, so teacher cache keys made before it stay."""
    assert "eval_every" not in Recipe().as_dict()
    assert Recipe(eval_every=4).as_dict()["eval_every"] == 4


@pytest.mark.parametrize("value", [0, -2, 1.5, True])
def test_a_bad_value_is_one_line_naming_the_key(value):
    with pytest.raises(ConfigError, match="train.eval_every must be"):
        student_recipe({"train": {"epochs": 4, "eval_every": value}}, "resnet8")


def test_a_grid_records_the_best_of_the_evaluated_epochs(tmp_path, capsys):
    assert main(["--results", str(tmp_path), "--grid", "g", "--methods", "kd", "--pairs", "resnet8:resnet8",
                 "--seeds", "0", "--epochs", "3", "--set", "train.eval_every=2", "--set", "teacher_train.epochs=1",
                 "--quiet"]) == 0
    rec = records.read_record(records.record_path(tmp_path / "g", records.run_id("kd", "resnet8", "resnet8", 0)))
    tops = [h.get("test_top1") for h in rec.history]
    assert tops[0] is None and tops[1] is not None and tops[2] is not None
    assert rec.metrics.top1_last == tops[2] and rec.metrics.epochs == 3
    assert rec.metrics.top1_best == max(tops[1:]) and rec.metrics.best_epoch in (2, 3)
    assert rec.config["train"]["eval_every"] == 2
    best = torch.load(tmp_path / "g" / "runs" / rec.weights_best, map_location="cpu", weights_only=True)
    assert best["epoch"] == rec.metrics.best_epoch
    lines = [json.loads(x) for x in (tmp_path / "g" / "runs" / f"{rec.run_id}.metrics.jsonl").read_text().splitlines()]
    assert ["test_top1" in x for x in lines] == [False, True, True]
    report = (tmp_path / "g" / "report.md").read_text()
    assert f"{rec.metrics.top1_last:.2f}" in report


def test_a_grid_evaluated_once_draws_no_curves_and_says_why(tmp_path):
    assert main(["--results", str(tmp_path), "--grid", "g", "--methods", "vanilla,kd", "--pairs", "resnet8:resnet8",
                 "--seeds", "0", "--epochs", "2", "--set", "train.eval_every=2", "--set", "teacher_train.epochs=1",
                 "--quiet"]) == 0
    report = (tmp_path / "g" / "report.md").read_text()
    assert "_skipped: the runs were evaluated on the test set once, after epoch 2 (train.eval_every): no curve to " \
           "draw; table 1 and the gain heatmap hold those numbers._" in report
    assert not (tmp_path / "g" / "figures" / "test_curves.png").exists()
