"""Issue 16, part 1: did the student learn the teacher? Top-1 agreement, KL(teacher || student) at T = 1 and
the expected calibration error, per evaluation; the teacher's test pass once per cohort; the report's fidelity
table and accuracy-vs-agreement figure. Every expected number is worked out in the comments."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from benchmarks import grid as grid_module
from kdcore.data import InMemoryData, load_dataset
from kdcore.fidelity import CalibrationBins, TeacherTest, ece_percent
from kdcore.models import create_model
from kdcore.records import read_json, record_path, run_id, write_json
from benchmarks.run import main
from kdcore.train import eval_metrics, freeze, train_cohort
from kdcore.recipe import Recipe
from methods import CATALOGUE
from reports import build_report, load_results
from reports import aggregate as agg
from test_harness import assert_bitwise_equal, make_runs, seed_for
from test_reports import A, B, _record, make_results, section, sub_table, table_rows

CPU = torch.device("cpu")
LN2 = math.log(2.0)


# ---------------------------------------------------------------------------- hand-computed metrics
class Lookup(nn.Module):
    """A 'model' whose logits for test sample i are row i of a fixed table (the input is the sample's index)."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.register_buffer("table", logits)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.table[x.long().view(-1)]


class IndexData:
    """Test set of ``len(labels)`` samples whose images are their indices."""

    def __init__(self, labels):
        self.labels = torch.tensor(labels)

    def test_batches(self, batch_size, device):
        for start in range(0, len(self.labels), batch_size):
            idx = torch.arange(start, min(start + batch_size, len(self.labels)))
            yield idx.float()[:, None], self.labels[idx]


def probs_to_logits(rows):
    return torch.tensor(rows, dtype=torch.float32).log()  # softmax(log p) = p


# teacher and student softmax outputs of 4 test samples, 3 classes; labels 0, 1, 2, 2
TEACHER = probs_to_logits([[.5, .25, .25], [.25, .5, .25], [.25, .25, .5], [.5, .25, .25]])  # argmax 0, 1, 2, 0
STUDENT = probs_to_logits([[.5, .25, .25], [.5, .25, .25], [.25, .25, .5], [.25, .5, .25]])  # argmax 0, 0, 2, 1
LABELS = [0, 1, 2, 2]


def test_agreement_kl_and_ece_by_hand():
    data = IndexData(LABELS)
    teacher = Lookup(TEACHER)
    tt = TeacherTest(teacher, data, CPU)
    m = eval_metrics(Lookup(STUDENT), data, CPU, batch_size=3, teacher_test=tt)  # batches of 3 and 1
    # argmax agree on samples 1 and 3 of 4: 50 %
    assert m["test_agreement"] == 50.0
    # KL(t || s): samples 1 and 3 are 0 (same distribution);
    # sample 2: .25 ln(.25/.5) + .5 ln(.5/.25) + .25 ln(.25/.25) = -.25 ln2 + .5 ln2 = .25 ln2; sample 4 likewise
    # mean over 4 samples: .5 ln2 / 4 = .125 ln2 = 0.0866434
    assert m["test_kl_teacher"] == pytest.approx(0.125 * LN2, abs=1e-6)
    # student: every confidence is 0.5 (one bin, (7/15, 8/15]); correct on samples 1 and 3: accuracy 0.5
    # -> ECE = |0.5 - 0.5| * 4/4 = 0
    assert m["test_ece"] == pytest.approx(0.0, abs=1e-5)
    assert m["test_top1"] == 50.0
    # teacher: confidence 0.5 everywhere, correct on 1, 2, 3 of 4: |0.75 - 0.5| = 25 %
    assert tt.ece(3) == pytest.approx(25.0, abs=1e-5)
    assert teacher.calls == 2  # one pass: two batches, and no more for the ECE
    eval_metrics(Lookup(STUDENT), data, CPU, batch_size=3, teacher_test=tt)
    assert teacher.calls == 2 and tt.passes == 1


def test_ece_by_hand_over_two_bins():
    # two classes; confidences 0.9 (bin 13: (13/15, 14/15]) x3, two of them right, and 0.7 (bin 10: (10/15, 11/15])
    # x3, one right. Per bin |correct - sum of confidences|: |2 - 2.7| = 0.7 and |1 - 2.1| = 1.1;
    # ECE = (0.7 + 1.1) / 6 = 0.3 -> 30 %
    logits = probs_to_logits([[.9, .1], [.9, .1], [.1, .9], [.7, .3], [.3, .7], [.7, .3]])
    labels = torch.tensor([0, 1, 1, 0, 0, 1])
    assert ece_percent(logits, labels) == pytest.approx(30.0, abs=1e-4)
    bins = CalibrationBins()
    bins.add(logits[:4], labels[:4])
    bins.add(logits[4:], labels[4:])  # accumulated over batches: the same
    assert bins.ece() == pytest.approx(30.0, abs=1e-4)
    assert bins.count.tolist() == [0.0] * 10 + [3.0, 0.0, 0.0, 3.0, 0.0]


def test_ece_matches_guo_et_al_reference():
    """Against the usual implementation (Guo et al. 2017: bins (lo, hi] from linspace(0, 1, 16))."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 10, generator=g) * 3
    labels = torch.randint(0, 10, (500,), generator=g)
    conf, pred = logits.softmax(1).max(1)
    right = (pred == labels).float()
    edges = torch.linspace(0, 1, 16)
    ref = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            ref += abs(float(right[inside].mean()) - float(conf[inside].mean())) * float(inside.float().mean())
    assert ece_percent(logits, labels) == pytest.approx(100.0 * ref, abs=1e-4)


# ---------------------------------------------------------------------------- the harness
@pytest.fixture(scope="module")
def small_digits() -> InMemoryData:
    d = load_dataset("digits")
    return InMemoryData("digits-slice", d.train_images[:96], d.train_labels[:96], d.test_images[:80],
                        d.test_labels[:80], 10, d.mean, d.std, pad=1, flip=False)


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    return freeze(create_model("resnet8", num_classes=10))


def _cohort(data, teacher, methods, epochs=2, eval_batch_size=32):
    runs = make_runs(methods, data, teacher, epochs=epochs)
    for r in runs:
        r.recipe = Recipe(**{**r.recipe.as_dict(), "eval_batch_size": eval_batch_size})
    return train_cohort(runs, data, CPU, teacher=teacher, data_generator=torch.Generator().manual_seed(
        seed_for(0, "data")))


def test_teacher_test_pass_once_per_cohort(small_digits, teacher):
    """3 runs x 2 epochs = 6 evaluations of 80 test images in batches of 32 (3 batches): the teacher runs on
    the test batches 3 times (one pass), not 18."""
    test_inputs, seen = [], []
    real = small_digits.test_batches

    def recording(batch_size, device):
        for x, y in real(batch_size, device):
            test_inputs.append(x)
            yield x, y

    hook = teacher.register_forward_hook(lambda mod, inp, out: seen.append(inp[0]))
    small_digits.test_batches = recording
    try:
        runs = _cohort(small_digits, teacher, ["vanilla", "kd", "fitnet"])
    finally:
        hook.remove()
        del small_digits.test_batches
    assert all(r.error is None for r in runs)
    on_test = [x for x in seen if any(x is t for t in test_inputs)]
    assert len(on_test) == 3 and len(seen) == 3  # training goes through forward_kd, never forward
    assert len(test_inputs) == 3 + 6 * 3  # the teacher's pass, then each evaluation's


def test_every_evaluation_has_the_fields_and_cohort_equals_solo(small_digits, teacher):
    methods = ["vanilla", "kd"]
    cohort = _cohort(small_digits, teacher, methods)
    for m, in_cohort in zip(methods, cohort):
        solo = _cohort(small_digits, teacher, [m])[0]
        assert_bitwise_equal(in_cohort, solo)  # the fidelity fields included
        for h in in_cohort.history:
            assert 0.0 <= h["test_agreement"] <= 100.0 and h["test_kl_teacher"] >= 0.0
            assert 0.0 <= h["test_ece"] <= 100.0
        assert in_cohort.teacher_ece == solo.teacher_ece and 0.0 <= in_cohort.teacher_ece <= 100.0
    # the entry's numbers are the student's against the teacher, measured again from the final weights
    again = eval_metrics(cohort[1].model, small_digits, CPU, 32, TeacherTest(teacher, small_digits, CPU))
    assert {k: cohort[1].history[-1][k] for k in again} == again


def test_without_a_teacher_the_fields_are_left_out(small_digits, teacher):
    runs = make_runs(["vanilla"], small_digits, teacher, epochs=1)
    train_cohort(runs, small_digits, CPU, teacher=None)
    h = runs[0].history[-1]
    assert "test_agreement" not in h and "test_kl_teacher" not in h and 0.0 <= h["test_ece"] <= 100.0
    assert runs[0].teacher_ece is None


def test_tiny_grid_records_keep_the_fields(tmp_path):
    args = ["--results", str(tmp_path), "--grid", "g", "--quiet", "--pairs", "resnet8:resnet8",
            "--methods", "vanilla,kd", "--seeds", "0", "--epochs", "1", "--set", "teacher_train.epochs=1"]
    assert main(args) == 0
    root = tmp_path / "g"
    for m in ("vanilla", "kd"):
        rid = run_id(m, "resnet8", "resnet8", 0)
        rec = read_json(record_path(root, rid))
        (entry,) = rec["history"]
        assert 0.0 <= entry["test_agreement"] <= 100.0 and entry["test_kl_teacher"] >= 0.0
        assert 0.0 <= entry["test_ece"] <= 100.0
        assert 0.0 <= rec["teacher_info"]["ece"] <= 100.0
        (line,) = (root / "runs" / f"{rid}.metrics.jsonl").read_text().splitlines()
        assert json.loads(line)["test_agreement"] == entry["test_agreement"]
    text = (root / "report.md").read_text(encoding="utf-8")
    rows = sub_table(section(text, 7), "Top-1 agreement with the teacher (%)")
    assert rows["vanilla"][0].endswith("(n=1)") and rows["kd"][0].endswith("(n=1)")
    assert (root / "figures" / "top1_vs_agreement.png").is_file()


# ---------------------------------------------------------------------------- the report
SEEDS = [0, 1]
# (method, pair A) per seed: last-epoch top-1, agreement, KL, ECE
FID = {
    "vanilla": ([70.0, 71.0], [80.0, 82.0], [0.5, 0.7], [5.0, 7.0]),
    "kd": ([73.0, 74.0], [90.0, 91.0], [0.2, 0.3], [3.0, 3.0]),
}
TEACHER_ECE_A = 4.5


def make_fidelity_results(root):
    """methods vanilla, kd; pairs A (records with the fields) and B (records written before them); 2 seeds."""
    write_json(root / "grid.json", {"name": "fid", "preset": "test", "dataset": "cifar100",
                                    "methods": ["vanilla", "kd"], "pairs": [A, B], "seeds": SEEDS,
                                    "config": {"train": {"epochs": 5}}})
    for m, (top1, agree, kl, ece) in FID.items():
        for i, seed in enumerate(SEEDS):
            rec = _record(m, A, seed, top1[i], "cifar100")
            rec["history"][-1].update(test_agreement=agree[i], test_kl_teacher=kl[i], test_ece=ece[i])
            rec["teacher_info"]["ece"] = TEACHER_ECE_A
            write_json(record_path(root, rec["run_id"]), rec)
            old = _record(m, B, seed, top1[i] - 5, "cifar100")
            write_json(record_path(root, old["run_id"]), old)
    return root


@pytest.fixture(scope="module")
def fid_report(tmp_path_factory):
    root = make_fidelity_results(tmp_path_factory.mktemp("fid") / "fid")
    return root, build_report(root, catalogue=CATALOGUE).read_text(encoding="utf-8")


def test_fidelity_table(fid_report):
    _, text = fid_report
    sec = section(text, 7)
    assert sec.startswith("## 7. Fidelity to the teacher (last epoch)")
    agree = sub_table(sec, "Top-1 agreement with the teacher (%)")
    # vanilla: mean 81, std sqrt((1 + 1) / 1) = 1.414; kd: mean 90.5, std sqrt(.25 + .25) = 0.707;
    # pair B's records predate the fields: –
    assert agree["vanilla"] == ["81.00 ± 1.41 (2)", "–"]
    assert agree["kd"] == ["90.50 ± 0.71 (2)", "–"]
    assert "teacher" not in agree
    kl = sub_table(sec, "KL(teacher ‖ student) at T = 1 (nats)")
    # vanilla: mean 0.6, std sqrt(.01 + .01) = 0.1414; kd: mean 0.25, std sqrt(.0025 + .0025) = 0.0707
    assert kl["vanilla"] == ["0.600 ± 0.141 (2)", "–"]
    assert kl["kd"] == ["0.250 ± 0.071 (2)", "–"]
    ece = sub_table(sec, "Expected calibration error (%)")
    assert ece["teacher"] == ["4.50", "–"]  # the teacher's ECE, once per teacher
    assert ece["vanilla"] == ["6.00 ± 1.41 (2)", "–"]
    assert ece["kd"] == ["3.00 ± 0.00 (2)", "–"]
    assert "## 8. Figures" in text


def test_accuracy_vs_agreement_figure(fid_report):
    root, text = fid_report
    assert "](figures/top1_vs_agreement.png)" in text
    assert (root / "figures" / "top1_vs_agreement.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from reports import figures
    res = load_results(root)
    last, agreement = agg.cell_stats(res, "top1_last"), agg.cell_stats(res, "agreement_last")
    with figures._style():
        fig = figures.fidelity_figure(res, last, agreement, figures.palette(agg.method_order(res.grid), CATALOGUE))
    points = {c.get_gid(): c.get_offsets().tolist() for c in fig.axes[0].collections}
    # one point per method and pair with data: (mean agreement, mean last top-1); pair B has no agreement
    assert points == {f"vanilla|{A}": [[81.0, 70.5]], f"kd|{A}": [[90.5, 73.5]]}


def test_fidelity_report_rebuilds_byte_identical(fid_report):
    root, _ = fid_report
    files = [root / "report.md", *sorted((root / "figures").glob("*.png"))]
    before = {f: f.read_bytes() for f in files}
    build_report(root, catalogue=CATALOGUE)
    assert {f: f.read_bytes() for f in files} == before


def test_old_records_still_report(tmp_path):
    """Records written before the fidelity fields: every fidelity cell is –, the figure is skipped."""
    root = make_results(tmp_path / "old")
    text = build_report(root, catalogue=CATALOGUE).read_text(encoding="utf-8")
    sec = section(text, 7)
    for title in ("Top-1 agreement with the teacher (%)", "KL(teacher ‖ student) at T = 1 (nats)",
                  "Expected calibration error (%)"):
        rows = sub_table(sec, title)
        assert {c for m, cells in rows.items() if m != "method" for c in cells} == {"–"}, title
    assert "_skipped: no complete run records its agreement with the teacher._" in text
    assert not (root / "figures" / "top1_vs_agreement.png").exists()
    assert table_rows(section(text, 1))  # the other sections are as before


def test_a_teacher_test_shared_by_cohorts_passes_once_and_changes_no_bit(small_digits, teacher):
    """Two cohorts (seeds 0 and 1) handed one TeacherTest: one teacher pass over the test set for both, and
    every number as with a TeacherTest of their own."""
    shared = TeacherTest(teacher, small_digits, CPU)
    for seed in (0, 1):
        own = make_runs(["kd"], small_digits, teacher, epochs=2, seed=seed)
        given = make_runs(["kd"], small_digits, teacher, epochs=2, seed=seed)
        for runs, teacher_test in ((own, None), (given, shared)):
            train_cohort(runs, small_digits, CPU, teacher=teacher, teacher_test=teacher_test,
                         data_generator=torch.Generator().manual_seed(seed_for(seed, "data")))
        assert_bitwise_equal(own[0], given[0])  # test_agreement and test_kl_teacher included
        assert own[0].teacher_ece == given[0].teacher_ece is not None
        assert "test_agreement" in given[0].history[-1]
    assert shared.passes == 1


def test_a_teacher_test_of_another_teacher_or_data_is_refused(small_digits, teacher):
    other = freeze(create_model("resnet8", num_classes=10))
    for wrong in (TeacherTest(other, small_digits, CPU), TeacherTest(teacher, load_dataset("digits"), CPU)):
        runs = make_runs(["kd"], small_digits, teacher, epochs=1)
        with pytest.raises(ValueError, match="teacher_test holds the test outputs of another teacher, data set or "
                                             "device"):
            train_cohort(runs, small_digits, CPU, teacher=teacher, teacher_test=wrong)
        assert runs[0].epochs_done == 0 and wrong.passes == 0


def test_a_grid_passes_its_teacher_over_the_test_set_once(tmp_path, monkeypatch):
    """Two seeds (two cohorts) of one pair: one teacher pass over the test set for the grid, and every run's
    agreement equal to a grid of that seed alone (which makes its own pass)."""
    made = []

    class Counted(TeacherTest):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(grid_module, "TeacherTest", Counted)
    tiny = ["--pairs", "resnet8:resnet8", "--epochs", "1", "--set", "teacher_train.epochs=1", "--quiet", "--no-report",
            "--methods", "vanilla,kd"]
    assert main(["--results", str(tmp_path / "both"), "--grid", "g", "--seeds", "0,1", *tiny]) == 0
    assert len(made) == 1 and made[0].passes == 1
    assert main(["--results", str(tmp_path / "one"), "--grid", "g", "--seeds", "1", *tiny]) == 0
    for method in ("vanilla", "kd"):
        rid = run_id(method, "resnet8", "resnet8", 1)
        both, one = (read_json(record_path(tmp_path / r / "g", rid)) for r in ("both", "one"))
        (b,), (o,) = both["history"], one["history"]
        assert (b["test_agreement"], b["test_kl_teacher"]) == (o["test_agreement"], o["test_kl_teacher"])
        assert both["teacher_info"]["ece"] == one["teacher_info"]["ece"]
