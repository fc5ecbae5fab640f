"""The method interface: example methods written against it (kept here, not registered in the product),
training progress, read access to the models at build time, batch coupling and needs_features."""
from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import torch

from benchmarks.distributed import approximation
from benchmarks.grid import probe
from kdcore.models import create_model
from kdcore.train import StudentRun, seed_for
from kdcore.recipe import Recipe
from methods import (BuildContext, Distiller, Progress, Range, batch_coupling, build_method, list_methods,
                     method_needs)
from methods import base as methods_base
from cohorts import digits_slice, import_file, make_run, random_teacher, train
from test_harness import assert_bitwise_equal  # the harness tests' bitwise cohort = solo check, not a copy

CPU = torch.device("cpu")
EXAMPLES = Path(__file__).parent / "examples"
METHOD_GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guides" / "method.md"


@pytest.fixture(scope="module")
def examples():
    """Register the example methods for this module only (the product's registry is restored after)."""
    saved = dict(methods_base._METHODS)
    modules = {}
    for path in sorted(EXAMPLES.glob("*.py")):
        module = import_file(path, f"kdbench_example_{path.stem}")
        modules[path.stem] = module
    yield modules
    methods_base._METHODS.clear()
    methods_base._METHODS.update(saved)


@pytest.fixture(scope="module")
def digits():
    return digits_slice()


@pytest.fixture(scope="module")
def teacher():
    return random_teacher()


def test_examples_are_not_in_the_product():
    assert not {"kd_warmup", "teacher_head", "hint_stage"} & set(list_methods())


def test_examples_follow_the_registry_rules(examples):
    for name in ("kd_warmup", "teacher_head", "hint_stage"):
        cls = methods_base.method_class(name)
        doc = examples[name].__doc__
        assert len(doc) > 200 and "default" in doc.lower()
        assert set(cls.ranges) == set(cls.defaults)


@pytest.mark.parametrize("example", ["kd_warmup", "teacher_head", "hint_stage"])
def test_example_trains_in_a_cohort_bitwise_equal_to_solo(examples, digits, teacher, example):
    over = {"kd_warmup": {"warmup": 2.0}}
    names = [example, "kd", "vanilla"]
    cohort = train([make_run(m, digits, teacher, overrides=over) for m in names], digits, teacher)
    assert all(r.error is None for r in cohort)
    for m, in_cohort in zip(names, cohort):
        solo = train([make_run(m, digits, teacher, overrides=over)], digits, teacher)[0]
        assert_bitwise_equal(in_cohort, solo)
    if example == "hint_stage":  # its stage epoch, then the main one (epochs 1 + 2)
        assert [h.get("stage") for h in cohort[0].history] == ["hint", None, None]
        assert cohort[0].history[0]["losses"]["hint"] > 0 and cohort[0].history[-1]["losses"]["kd"] > 0
    else:
        assert cohort[0].history[-1]["losses"][example] > 0


def test_progress_is_handed_to_the_method_every_step(examples, digits, teacher):
    run = make_run("kd_warmup", digits, teacher, overrides={"kd_warmup": {"warmup": 2.0}})
    seen = []
    real = run.method.set_progress
    run.method.set_progress = lambda p: (seen.append(p), real(p))
    train([run], digits, teacher)
    steps = -(-digits.num_train // 32)  # 5 batches per epoch, the last one kept
    assert seen == [Progress(e + s / steps, 2) for e in range(2) for s in range(steps)]
    # the DKD-style ramp: min(epoch / warmup, 1) scales the weight
    m = run.method
    for epoch, ramp in ((0.0, 0.0), (1.0, 0.5), (1.5, 0.75), (2.0, 1.0), (30.0, 1.0)):
        m.set_progress(Progress(epoch, 2))
        assert m.loss_weights() == {"kd_warmup": ramp}
    # before training, progress is at its start
    assert make_run("kd_warmup", digits, teacher).method.progress == Progress(0.0, 1)


def test_progress_dependent_weight_resumes_bitwise(examples, digits, teacher):
    over = {"kd_warmup": {"warmup": 2.0}}
    full = train([make_run("kd_warmup", digits, teacher, overrides=over)], digits, teacher)[0]
    saved = {}

    def stop_after_first(epoch, runs):
        if epoch == 0:
            saved.update(run=copy.deepcopy(runs[0].state_dict()), gen=gen.get_state())
            raise KeyboardInterrupt  # the process dies after its epoch-1 checkpoint

    gen = torch.Generator().manual_seed(seed_for(0, "data"))
    with pytest.raises(KeyboardInterrupt):
        train([make_run("kd_warmup", digits, teacher, overrides=over)], digits, teacher, generator=gen,
              on_epoch_end=stop_after_first)
    resumed = make_run("kd_warmup", digits, teacher, overrides=over)
    resumed.load_state_dict(saved["run"])
    train([resumed], digits, teacher, generator=torch.Generator().set_state(saved["gen"]))
    assert_bitwise_equal(full, resumed)


def test_a_method_reads_the_teacher_at_build(examples, digits, teacher):
    run = make_run("teacher_head", digits, teacher)
    assert torch.equal(run.method.head_weight, teacher.fc.weight)
    assert torch.equal(run.method.head_bias, teacher.fc.bias)
    # a copy, not the teacher's own tensor; the teacher is no submodule of the method
    assert run.method.head_weight.data_ptr() != teacher.fc.weight.data_ptr()
    assert not any(m is teacher for m in run.method.modules())
    # without a teacher model it says so
    ctx = BuildContext(probe(run.model, digits.input_shape, CPU, True), probe(teacher, digits.input_shape, CPU, True),
                       10, digits.train_labels)
    with pytest.raises(ValueError, match="needs the teacher model"):
        build_method("teacher_head", ctx)


def test_a_method_may_not_keep_a_model(digits, teacher):
    class Keeper(Distiller):
        name = "keeper"

        def __init__(self, ctx, **hp):
            super().__init__(ctx, **hp)
            self.teacher = ctx.teacher_model  # would join the method's state and its train()

    saved = dict(methods_base._METHODS)
    try:
        methods_base.register_method("keeper")(Keeper)
        model = create_model("resnet8", num_classes=10)
        ctx = BuildContext(None, None, 10, digits.train_labels, student_model=model, teacher_model=teacher)
        with pytest.raises(TypeError, match="keeps the teacher model"):
            build_method("keeper", ctx)
    finally:
        methods_base._METHODS.clear()
        methods_base._METHODS.update(saved)


def test_registration_requires_a_range_per_hyperparameter():
    class NoRange(Distiller):
        defaults = {"T": 4.0, "gamma": 1.0}
        ranges = {"T": Range(gt=0)}

    with pytest.raises(ValueError, match=r"missing \['gamma'\]"):
        methods_base.register_method("norange")(NoRange)
    assert "norange" not in list_methods()


def test_batch_coupling_is_declared_by_the_method():
    # relations (rkd, sp, pkt, cc), memory banks (crd), in-batch statistics (dist's intra-class term, mlkd's
    # Gram matrices and medians), in-batch negatives (triplet, pair)
    assert [m for m in list_methods() if method_needs(m, "couples_batch")] == \
        ["cc", "crd", "dist", "mlkd", "pair", "pkt", "rkd", "sp", "triplet"]
    assert batch_coupling("kd") is None and batch_coupling("fitnet+at") is None
    assert batch_coupling("rkd").startswith("rkd: its distances and angles relate")
    assert batch_coupling("triplet") is None  # negatives="dataset": drawn per anchor
    assert batch_coupling("triplet", {"triplet": {"negatives": "batch"}}).startswith("triplet: negatives='batch'")
    assert batch_coupling("crd+kd").startswith("crd: its memory banks")
    # the DDP entry point reads the same declarations
    assert approximation({"crd": {}, "kd": {}}) == batch_coupling("crd+kd")
    assert approximation({"pair": {"negatives": "batch"}}) == batch_coupling("pair", {"pair": {"negatives": "batch"}})


def test_needs_features_false_gets_logits_only(digits, teacher):
    seen = {}

    class Spy(Distiller):
        name = "spy"
        defaults = {"gamma": 1.0}
        ranges = {"gamma": Range(ge=0)}

        def losses(self, student, teacher, batch):
            seen.update(student=student, teacher=teacher)
            return {}

    for needs in (False, True):
        Spy.needs_features = needs
        model = create_model("resnet8", num_classes=10)
        method = Spy(BuildContext(None, None, 10, digits.train_labels))
        run = StudentRun("spy", model, method, Recipe(epochs=1, batch_size=64), 0)
        train([run], digits, teacher)
        for side in ("student", "teacher"):
            out = seen[side]
            assert out.logits.shape[1] == 10
            if needs:
                assert len(out.features) == 4 and out.embedding.shape[1] == 64, side
            else:
                assert out.features == [] and out.embedding is None, side


def test_readme_template_is_the_tested_example():
    """The method guide (docs/guides/method.md, moved from README's "Adding a method") shows
    tests/examples/kd_warmup.py, as the suite trains it: included from the file, so it cannot drift."""
    text = METHOD_GUIDE.read_text()
    section = text[text.index("## A second example"):]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert block == '--8<-- "tests/examples/kd_warmup.py"\n'
    assert (EXAMPLES / "kd_warmup.py").is_file()
