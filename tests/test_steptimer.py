"""The optional step timer of the training loop (``train_cohort(step_timer=...)``): it times every part of
the step and changes no bit of the training."""
from __future__ import annotations

import pytest
import torch

from kdcore.steptimer import PARTS, StepTimer, section
from cohorts import digits_slice, make_run, random_teacher, train

# kd: the batch, the teacher, the student and its step; triplet (negatives="dataset") also draws negatives
# in prepare and fetches their images; mlkd draws a view (data + teacher fwd); ab has a pre-training stage
METHODS = ["kd", "triplet", "mlkd", "ab"]
OVERRIDES = {"ab": {"init_epochs": 1}}


def weights(run):
    return {**{f"model.{k}": v for k, v in run.model.state_dict().items()},
            **{f"method.{k}": v for k, v in run.method.state_dict().items()}}


def untimed(history):
    return [{k: v for k, v in h.items() if "time" not in k and k != "images_per_s"} for h in history]


def test_timed_training_is_bitwise_the_untimed_one():
    data, teacher = digits_slice(), random_teacher()
    plain = train([make_run(m, data, teacher, overrides=OVERRIDES) for m in METHODS], data, teacher)
    timer = StepTimer(torch.device("cpu"))
    timed = train([make_run(m, data, teacher, overrides=OVERRIDES) for m in METHODS], data, teacher,
                  step_timer=timer)
    for a, b in zip(plain, timed):
        assert a.error is None and b.error is None, (a.error, b.error)
        wa, wb = weights(a), weights(b)
        assert wa.keys() == wb.keys()
        for k in wa:
            assert torch.equal(wa[k], wb[k]), (a.run_id, k)
        assert untimed(a.history) == untimed(b.history)
    seconds = timer.seconds()
    assert set(seconds) == set(PARTS)
    assert all(seconds[p] > 0 for p in PARTS), seconds
    # a later call without a timer takes it off the runs
    assert all(r.step_timer is timer for r in timed)
    train(timed[:1], data, teacher)
    assert timed[0].step_timer is None


def test_every_part_kd_uses_is_timed_and_no_other():
    data, teacher = digits_slice(), random_teacher()
    timer = StepTimer("cpu")
    run, = train([make_run("kd", data, teacher, epochs=1)], data, teacher, step_timer=timer)
    assert run.error is None
    seconds = timer.seconds()
    for part in ("data", "teacher fwd", "prepare", "student fwd", "losses", "backward", "optimizer"):
        assert seconds[part] > 0, (part, seconds)
    assert seconds["extra fetch"] == 0  # kd draws no extra samples
    timer.reset()
    assert timer.seconds() == {p: 0.0 for p in PARTS}


def test_vanilla_spends_nothing_on_a_teacher():
    data, teacher = digits_slice(), random_teacher()
    timer = StepTimer("cpu")
    train([make_run("vanilla", data, teacher, epochs=1)], data, teacher, step_timer=timer)
    seconds = timer.seconds()
    assert seconds["teacher fwd"] == 0 and seconds["student fwd"] > 0 and seconds["data"] > 0


def test_sections_nest_into_the_outer_part_and_names_are_checked():
    timer = StepTimer("cpu")
    with timer.section("losses"):
        with timer.section("backward"):  # counted by "losses"
            pass
    seconds = timer.seconds()
    assert seconds["losses"] > 0 and seconds["backward"] == 0
    with pytest.raises(ValueError, match="unknown part"):
        with timer.section("evaluation"):
            pass
    with section(None, "data"):  # no timer: nothing to time
        pass
