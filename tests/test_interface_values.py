"""Every declared hyperparameter range, tried as a new user would: an out-of-range ``--set`` exits 2
with one clear line, before any teacher trains and without creating the results folder.

Parametrised over the registry and each method's ``ranges``, so a new method is covered unchanged.
"""
from __future__ import annotations

import pytest

from benchmarks.run import main
from methods import Choice, list_methods, list_modifiers, method_class, modifiable_by


def out_of_range(spec, default):
    """Values just outside ``spec`` (one per bound), typed as ``default``."""
    if isinstance(spec, Choice):
        return ["no-such-choice"]
    step = 1 if isinstance(default, int) else 0.5
    vals = []
    if spec.gt is not None:
        vals.append(spec.gt)
    if spec.ge is not None:
        vals.append(spec.ge - step)
    if spec.lt is not None:
        vals.append(spec.lt)
    if spec.le is not None:
        vals.append(spec.le + step)
    return [type(default)(v) for v in vals]


CASES = [(m, key, v) for m in list_methods() + list_modifiers() for key, spec in sorted(method_class(m).ranges.items())
         for v in out_of_range(spec, method_class(m).defaults[key])]


def test_every_method_declares_ranges():
    assert {m for m, _, _ in CASES} == set(list_methods()) | set(list_modifiers())


@pytest.mark.parametrize("method,key,value", CASES, ids=[f"{m}.{k}={v}" for m, k, v in CASES])
def test_bad_value_exits_2_before_any_work(capsys, tmp_path, method, key, value):
    results = tmp_path / "results"
    # a modifier runs written after a method that declares it (kd+ls)
    run = method if not method_class(method).modifier else \
        f"{modifiable_by(method)[0]}+{method}"
    code = main(["--results", str(results), "--methods", run, "--pairs", "resnet8:resnet8", "--epochs", "1",
                 "--set", f"{method}.{key}={value}", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    spec = method_class(method).ranges[key]
    assert err == [f"error: {spec.error(f'{method}.{key}', value)}"]
    assert not results.exists()  # no teacher trained, no record written


@pytest.mark.parametrize("assignment,message", [
    ("kd.T=-1", "error: kd.T must be > 0, got -1.0"),
    ("at.beta=-5", "error: at.beta must be >= 0, got -5.0"),
    ("triplet.margin=-1", "error: triplet.margin must be >= 0, got -1.0"),
    ("crd.nce_k=0", "error: crd.nce_k must be >= 1, got 0"),
    ("crd.nce_m=1.5", "error: crd.nce_m must be in [0, 1], got 1.5"),
])
def test_the_issue_cases(capsys, tmp_path, assignment, message):
    # the override is checked even when its method is not in the grid
    code = main(["--results", str(tmp_path / "r"), "--methods", "vanilla", "--set", assignment, "--quiet"])
    assert code == 2 and capsys.readouterr().err.strip() == message
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("argv,message", [
    # resnet8's forward_kd gives 4 feature maps (stem + 3 stages): index 4 is past the last
    (["--set", "fitnet.hint_layer=4"],
     "error: fitnet on resnet8:resnet8: fitnet.hint_layer=4 is out of range: the student has 4 feature maps, "
     "the teacher 4 (index 0 is the stem, 1.. the stages)"),
    (["--sweep", "fitnet.hint_layer=1,9"],
     "error: fitnet[hint_layer=9] on resnet8:resnet8: fitnet.hint_layer=9 is out of range: the student has 4 "
     "feature maps, the teacher 4 (index 0 is the stem, 1.. the stages)"),
])
def test_bounds_only_the_models_know_exit_2_before_any_teacher_trains(capsys, tmp_path, argv, message):
    # fitnet's upper bound depends on the pair: the runner builds each method once on untrained models first
    code = main(["--results", str(tmp_path / "r"), "--methods", "vanilla,fitnet", "--pairs", "resnet8:resnet8",
                 "--epochs", "1", "--quiet", *argv])
    assert code == 2 and capsys.readouterr().err.strip() == message
    assert not (tmp_path / "r").exists()
    # a pair a method cannot run is not an input error: fsp's unequal channels stay "not applicable" runs
    code = main(["--results", str(tmp_path / "r"), "--methods", "fsp", "--pairs", "resnet8:wrn_16_2", "--epochs",
                 "1", "--set", "teacher_train.epochs=1", "--quiet", "--dry-run"])
    assert code == 0
