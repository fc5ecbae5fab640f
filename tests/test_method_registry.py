"""The registry, and every method x every cifar100 pair taking a real training step.

Parametrised over the registry and the preset's pairs, so a new method or a new
pair is covered without touching this file.
"""
from __future__ import annotations

import functools
import math

import pytest
import torch

from kdcore.config import load_preset, parse_pair
from kdcore.data import InMemoryData
from kdcore.models import create_model
from benchmarks.grid import probe
from kdcore.train import StudentRun, freeze
from kdcore.recipe import Recipe
from cohorts import step_each_stage
from methods import (BuildContext, HyperparameterError, PairNotSupported, UnknownMethodError, build_method,
                     list_methods, method_class, method_needs, modified_methods, validate_method)

CPU = torch.device("cpu")
PAIRS = load_preset("cifar100")["pairs"]
# every modifier on every method that declares it (kd+ls, dkd+ls, ...), from the registry
MODIFIED = modified_methods()
COMBOS = ["crd+kd", "triplet+kd"] + MODIFIED


def test_registry_lists_the_seed_methods():
    assert set(list_methods()) >= {"vanilla", "kd", "fitnet", "at", "rkd", "crd", "triplet", "pair"}
    for name in list_methods():
        cls = method_class(name)
        assert cls.name == name
        doc = __import__(cls.__module__, fromlist=["_"]).__doc__ or ""
        # docs/guides/method.md ("Adding a method"), docstring rule: paper, formula, defaults with their source
        assert len(doc) > 200 and "default" in doc.lower(), (
            f"{name}: the module docstring of {cls.__module__} must be over 200 characters and contain "
            f"'default' (docs/guides/method.md)")
        # every hyperparameter has a declared range (register_method enforces it)
        assert set(cls.ranges) == set(cls.defaults), name


def test_method_needs_by_name():
    """What the harness reads before building a method: a composition needs what any part needs."""
    assert method_needs("kd", "needs_teacher") and not method_needs("vanilla", "needs_teacher")
    assert not method_needs("kd", "needs_features") and method_needs("crd", "needs_features")
    assert method_needs("triplet+at", "needs_features") and method_needs("at+triplet", "needs_features")
    assert not method_needs("triplet+kd", "needs_features")
    assert method_needs("crd+kd", "couples_batch") and not method_needs("kd+at", "couples_batch")
    with pytest.raises(UnknownMethodError):
        method_needs("kd+nope", "needs_teacher")


def test_unknown_method_lists_known_ones():
    with pytest.raises(UnknownMethodError) as e:
        validate_method("hinton")
    assert "unknown method 'hinton'" in str(e.value) and "kd" in str(e.value) and "crd" in str(e.value)
    with pytest.raises(UnknownMethodError):
        validate_method("kd+nope")
    with pytest.raises(UnknownMethodError, match="cannot be combined"):
        validate_method("vanilla+kd")


def test_hyperparameter_checks():
    with pytest.raises(HyperparameterError, match="unknown hyperparameter kd.temperature"):
        validate_method("kd", {"kd": {"temperature": 2.0}})
    with pytest.raises(HyperparameterError, match="kd.T must be a float"):
        validate_method("kd", {"kd": {"T": "hot"}})
    assert validate_method("crd+kd", {"kd": {"T": 2}})["kd"] == {"T": 2.0, "gamma": 0.1, "alpha": 1.0}


def _fake_data(num_classes: int = 100, n: int = 300) -> InMemoryData:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    y = torch.arange(n) % num_classes
    return InMemoryData("fake", x, y, x[:8], y[:8], num_classes, (0.5,) * 3, (0.25,) * 3)


@functools.lru_cache(maxsize=2)
def _teacher_batch(pair: str):
    """One frozen teacher, batch and teacher output per pair, shared by that pair's method cases."""
    teacher_name, _ = parse_pair(pair)
    data = _fake_data()
    torch.manual_seed(0)
    teacher = create_model(teacher_name, num_classes=100)
    # BN statistics of the data, as a trained teacher has: a random network's eval-mode activations grow
    # with depth (resnet56's last stage reaches ~6e4), which no trained teacher shows
    for m in teacher.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average
    with torch.no_grad():
        teacher.train()(data.normalise(data.train_images[:64]))
    teacher = freeze(teacher)
    g = torch.Generator().manual_seed(1)
    x, y, index = next(data.epoch_batches(4, g, CPU))
    with torch.no_grad():
        t_out = teacher.forward_kd(x, preact=True)
    return data, teacher, x, y, index, t_out


# ids carry the method's name, so ./run_tests.sh -k NAME selects a method's cases
@pytest.mark.parametrize("name", list_methods() + COMBOS)
@pytest.mark.parametrize("pair", PAIRS)
def test_every_method_takes_a_step_on_every_cifar100_pair(name, pair):
    _, student_name = parse_pair(pair)
    data, teacher, x, y, index, t_out = _teacher_batch(pair)
    torch.manual_seed(0)
    student = create_model(student_name, num_classes=100)
    ctx = BuildContext(probe(student, data.input_shape, CPU, True), probe(teacher, data.input_shape, CPU, True),
                       100, data.train_labels, student_model=student, teacher_model=teacher)
    try:
        method = build_method(name, ctx)
    except PairNotSupported as e:  # the reference cannot run this pair either (FSP: unequal channel counts)
        assert name in ("fsp", "ab") and str(e).startswith(f"{name} "), (name, pair, str(e))
        return
    run = StudentRun(name, student, method, Recipe(batch_size=4), seed=0)
    before = [p.detach().clone() for p in student.parameters()]
    # a pre-training stage's step (if the method has one), then a main step; each trains what it declares
    for stage, loss in step_each_stage(run, x, y, index, t_out, data, teacher):
        assert math.isfinite(float(loss)), f"{name} on {pair}: loss {loss} ({stage})"
        trained = run.stage_optimizers[stage.name] if stage is not None else run.optimizer
        for group in trained.param_groups:  # every parameter the step's optimizer holds got a finite gradient
            for p in group["params"]:
                if stage is not None or any(p is q for q in method.parameters()):
                    assert p.grad is not None and torch.isfinite(p.grad).all(), f"{name} on {pair}: grad ({stage})"
    moved = sum(not torch.equal(a, b.detach()) for a, b in zip(before, student.parameters()))
    assert moved > 0, f"{name} on {pair}: the student did not change"


@pytest.mark.parametrize("name,message", [
    ("kd+kd", "bad method name 'kd+kd': it names kd twice (each part once, e.g. 'crd+kd')"),
    ("crd+kd+crd", "bad method name 'crd+kd+crd': it names crd twice (each part once, e.g. 'crd+kd')"),
    ("kd+", "bad method name 'kd+': expected e.g. 'kd' or 'crd+kd'"),
    ("+kd", "bad method name '+kd': expected e.g. 'kd' or 'crd+kd'"),
])
def test_a_bad_composition_says_what_is_wrong(name, message):
    with pytest.raises(UnknownMethodError) as e:
        validate_method(name)
    assert str(e.value) == message
