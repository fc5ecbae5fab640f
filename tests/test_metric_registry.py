"""Issue 29: a metric is one definition (``kdcore.metrics``) that the evaluation, the history entries,
TensorBoard and the report's fidelity table pick up. The guide's example (docs/examples/metric_example.py, the
test negative log-likelihood) is imported by path and must show up in all of them; its registration is undone
after each test."""
from __future__ import annotations

import json
import math
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from kdcore.curves import CurveWriter, scalars
from kdcore.fidelity import CalibrationBins, TeacherTest, agreement_count, kl_sum
from kdcore.metrics import Metric, entry_order, get_metric, list_metrics, register_metric, unregister_metric
from kdcore.records import record_path, write_json
from kdcore.train import eval_metrics
from reports import aggregate as agg
from reports import build_report
from reports import tables
from test_fidelity import CPU, LABELS, LN2, STUDENT, TEACHER, IndexData, Lookup, make_fidelity_results
from test_reports import A, section, sub_table
from test_resume import event_steps
from cohorts import import_file

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "examples" / "metric_example.py"
GUIDE = ROOT / "docs" / "guides" / "metric.md"
BUILTIN = ["top1", "top5", "agreement", "kl_teacher", "ece"]


@contextmanager
def example_metric():
    """The guide's example imported by path (it registers ``nll``), unregistered on the way out."""
    before = [m.name for m in list_metrics()]
    module = import_file(EXAMPLE, "kdbench_metric_example")
    try:
        yield module
    finally:
        unregister_metric("nll")
        assert [m.name for m in list_metrics()] == before


@pytest.fixture
def nll():
    with example_metric() as module:
        yield module


# ---------------------------------------------------------------------------- the built-in metrics
def test_the_registry_holds_todays_metrics():
    assert [m.name for m in list_metrics()] == BUILTIN
    got = {m.name: (m.key, m.tag, m.column, m.digits, m.needs_teacher, m.higher_is_better, m.teacher_info)
           for m in list_metrics()}
    assert got == {
        "top1": ("test_top1", "test/top1", None, 2, False, True, None),
        "top5": ("test_top5", "test/top5", None, 2, False, True, None),
        "agreement": ("test_agreement", "fidelity/agreement", "agreement_last", 2, True, True, None),
        "kl_teacher": ("test_kl_teacher", "fidelity/kl_teacher", "kl_teacher_last", 3, True, False, None),
        "ece": ("test_ece", "test/ece", "ece_last", 2, False, False, "ece"),
    }
    assert [m.title for m in tables.fidelity_tables()] == [
        "Top-1 agreement with the teacher (%)", "KL(teacher ‖ student) at T = 1 (nats)",
        "Expected calibration error (%)"]
    assert all(m.description for m in list_metrics())
    # the history entry's order, as kdbench always wrote it
    assert [m.key for m in entry_order()] == ["test_top1", "test_top5", "test_ece", "test_agreement",
                                              "test_kl_teacher"]
    assert [m.key for m in entry_order(teacher=False)] == ["test_top1", "test_top5", "test_ece"]
    assert dict(agg.FIDELITY_COLUMNS) == {"agreement_last": "test_agreement", "kl_teacher_last": "test_kl_teacher",
                                          "ece_last": "test_ece"}
    assert agg.teacher_column(get_metric("ece")) == "teacher_ece"


def _eval_metrics_before_the_registry(model, data, batch_size, teacher_test):
    """eval_metrics as it was written before ``kdcore.metrics`` (one loop, every sum by hand)."""
    correct1 = correct5 = total = agree = 0
    kl = 0.0
    bins = CalibrationBins()
    teacher_batches = iter(teacher_test.batches(batch_size)) if teacher_test is not None else None
    for x, y in data.test_batches(batch_size, CPU):
        logits = model(x)
        k = min(5, logits.shape[1])
        hit = logits.topk(k, dim=1).indices == y[:, None]
        correct1 += int(hit[:, 0].sum())
        correct5 += int(hit.any(dim=1).sum())
        total += y.numel()
        bins.add(logits, y)
        if teacher_batches is not None:
            t_log_probs, t_pred = next(teacher_batches)
            agree += agreement_count(logits, t_pred)
            kl += kl_sum(logits, t_log_probs)
    out = {"test_top1": 100.0 * correct1 / total, "test_top5": 100.0 * correct5 / total, "test_ece": bins.ece()}
    if teacher_test is not None:
        out.update(test_agreement=100.0 * agree / total, test_kl_teacher=kl / total)
    return out


@pytest.mark.parametrize("classes", [3, 10])
@pytest.mark.parametrize("with_teacher", [True, False])
def test_the_registry_gives_the_same_bits_and_order_as_before(classes, with_teacher):
    g = torch.Generator().manual_seed(classes)
    student, teacher = torch.randn(203, classes, generator=g) * 3, torch.randn(203, classes, generator=g) * 3
    data = IndexData(torch.randint(0, classes, (203,), generator=g).tolist())
    tt = TeacherTest(Lookup(teacher), data, CPU) if with_teacher else None
    new = eval_metrics(Lookup(student), data, CPU, batch_size=64, teacher_test=tt)
    old = _eval_metrics_before_the_registry(Lookup(student), data, 64, tt)
    assert list(new) == list(old)
    assert all(math.copysign(1, new[k]) == math.copysign(1, old[k]) and new[k] == old[k] for k in old), (new, old)


def test_a_duplicate_name_key_tag_or_column_raises():
    start = get_metric("top1").start
    with pytest.raises(ValueError, match="name 'top1'"):
        register_metric(Metric("top1", start, "again"))
    with pytest.raises(ValueError, match="key 'test_agreement'"):
        register_metric(Metric("other", start, "same key", key="test_agreement"))
    with pytest.raises(ValueError, match="tag 'fidelity/agreement'"):
        register_metric(Metric("other", start, "same tag", tag="fidelity/agreement"))
    with pytest.raises(ValueError, match="column 'ece_last'"):
        register_metric(Metric("other", start, "same column", column="ece_last"))
    with pytest.raises(ValueError, match="identifier"):
        Metric("not a name", start, "spaces")
    assert [m.name for m in list_metrics()] == BUILTIN


def test_registering_the_example_twice_raises(nll):
    with pytest.raises(ValueError, match="name 'nll'"):
        register_metric(Metric("nll", nll.NLL, "again"))


# ---------------------------------------------------------------------------- the guide's example, everywhere
# -ln p(label) of the student of test_fidelity (softmax rows .5/.25/.25 ...; labels 0, 1, 2, 2):
# sample 1: -ln .5 = ln 2; sample 2: -ln .25 = 2 ln 2; sample 3: ln 2; sample 4: 2 ln 2 -> mean 6 ln 2 / 4
NLL_BY_HAND = 1.5 * LN2


def test_the_example_registers_a_metric_with_its_defaults(nll):
    m = get_metric("nll")
    assert m is nll.NLL_METRIC and [x.name for x in list_metrics()] == BUILTIN + ["nll"]
    assert (m.key, m.tag, m.column, m.digits, m.needs_teacher, m.higher_is_better) == \
           ("test_nll", "test/nll", "nll_last", 3, False, False)
    assert agg.FIDELITY_COLUMNS["nll_last"] == "test_nll"


def test_the_example_in_eval_metrics_by_hand(nll):
    data = IndexData(LABELS)
    tt = TeacherTest(Lookup(TEACHER), data, CPU)
    m = eval_metrics(Lookup(STUDENT), data, CPU, batch_size=3, teacher_test=tt)  # batches of 3 and 1
    assert m["test_nll"] == pytest.approx(NLL_BY_HAND, abs=1e-6)
    # a metric without a teacher: after the others without one, before the teacher's
    assert list(m) == ["test_top1", "test_top5", "test_ece", "test_nll", "test_agreement", "test_kl_teacher"]
    alone = eval_metrics(Lookup(STUDENT), data, CPU, batch_size=2)
    assert list(alone) == ["test_top1", "test_top5", "test_ece", "test_nll"]
    assert alone["test_nll"] == pytest.approx(NLL_BY_HAND, abs=1e-6)
    # the accumulator by hand: start, add per batch, value
    acc = nll.NLL_METRIC.start()
    acc.add(STUDENT[:1], torch.tensor(LABELS[:1]), None)
    acc.add(STUDENT[1:], torch.tensor(LABELS[1:]), None)
    assert acc.value() == pytest.approx(NLL_BY_HAND, abs=1e-6)


def test_the_example_in_tensorboard(nll, tmp_path):
    entry = {"epoch": 1, "lr": 0.05, "loss": 1.0, "losses": {"ce": 1.0}, "weighted_losses": {"ce": 1.0},
             "train_top1": 50.0, "test_top1": 40.0, "test_top5": 90.0, "test_ece": 3.0, "test_nll": 1.25,
             "time_s": 2.0, "eval_time_s": 0.5, "images_per_s": 100.0}
    assert scalars(entry)["test/nll"] == 1.25
    w = CurveWriter(tmp_path, "r")
    w.start({"method": "kd"}, [entry, {**entry, "epoch": 2, "test_nll": 1.0}])
    w.close()
    steps = event_steps(tmp_path, "r")
    assert steps["test/nll"] == [(1, 1.25), (2, 1.0)]
    assert steps["test/top1"] == [(1, 40.0), (2, 40.0)] and "fidelity/agreement" not in steps


def test_the_example_in_the_report(nll, tmp_path):
    root = make_fidelity_results(tmp_path / "fid")
    values = {"vanilla": [1.0, 1.2], "kd": [0.5, 0.5]}
    for path in sorted((root / "runs").glob("*.json")):
        rec = json.loads(path.read_text())
        if rec["pair"] == A:
            rec["history"][-1]["test_nll"] = values[rec["method"]][rec["seed"]]
            write_json(record_path(root, rec["run_id"]), rec)
    text = build_report(root).read_text(encoding="utf-8")
    sec = section(text, 7)
    table = sub_table(sec, "Test negative log-likelihood (nats)")
    # vanilla: mean 1.1, std sqrt(.01 + .01) = 0.141; kd: 0.5 ± 0; pair B's records have no test_nll
    assert table["vanilla"] == ["1.100 ± 0.141 (2)", "–"]
    assert table["kd"] == ["0.500 ± 0.000 (2)", "–"]
    assert "teacher" not in table
    # the tables before it are as they were; its description follows the footnote
    assert sec.index("**Expected calibration error (%)**") < sec.index("**Test negative log-likelihood (nats)**")
    assert sub_table(sec, "Expected calibration error (%)")["teacher"] == ["4.50", "–"]
    assert sec.rstrip().endswith("Test negative log-likelihood (nats): mean over the test samples of "
                                 "-ln p_student(label), in nats.")


class _Never:
    """An accumulator the report test never runs (the records are synthetic)."""

    def add(self, logits, labels, teacher):
        raise AssertionError("not evaluated here")

    def value(self):
        raise AssertionError("not evaluated here")


def test_a_metric_with_teacher_info_gets_a_teacher_row(tmp_path):
    root = make_fidelity_results(tmp_path / "fid")
    for path in sorted((root / "runs").glob("*.json")):
        rec = json.loads(path.read_text())
        if rec["pair"] == A:
            rec["history"][-1]["test_brier"] = 0.25 + 0.5 * rec["seed"]
            rec["teacher_info"]["brier"] = 0.5
            write_json(record_path(root, rec["run_id"]), rec)
    register_metric(Metric("brier", _Never, "mean squared error of the softmax against the one-hot label",
                           column="brier_last", title="Brier score", digits=3, higher_is_better=False,
                           teacher_info="brier"))
    try:
        text = build_report(root).read_text(encoding="utf-8")
    finally:
        unregister_metric("brier")
    table = sub_table(section(text, 7), "Brier score")
    assert table["teacher"] == ["0.50", "–"]  # a teacher cell has 2 decimals, as the ECE's
    assert table["vanilla"] == table["kd"] == ["0.500 ± 0.354 (2)", "–"]
    assert [m.name for m in list_metrics()] == BUILTIN


def test_without_the_example_the_report_has_no_such_table(tmp_path):
    text = build_report(make_fidelity_results(tmp_path / "fid")).read_text(encoding="utf-8")
    assert "negative log-likelihood" not in text
    assert section(text, 7).rstrip().endswith(tables.FIDELITY_FOOTNOTE)


def test_the_example_is_unregistered_after_its_tests():
    with example_metric():
        assert "nll" in [m.name for m in list_metrics()]
    assert [m.name for m in list_metrics()] == BUILTIN
    assert "test_nll" not in eval_metrics(Lookup(STUDENT), IndexData(LABELS), CPU, batch_size=4)


def test_the_guide_includes_the_example_file():
    text = GUIDE.read_text(encoding="utf-8")
    assert '--8<-- "docs/examples/metric_example.py"' in text
