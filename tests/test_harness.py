"""The training loop: frozen teacher, bitwise determinism, cohort == solo, the schedule, divergence."""
from __future__ import annotations

import math

import pytest
import torch

from kdcore.data import InMemoryData, load_dataset
from kdcore.models import create_model
from benchmarks.grid import probe
from kdcore.train import DivergenceError, StudentRun, freeze, seed_for, train_cohort
from kdcore.recipe import Recipe
from methods import BuildContext, build_method

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def small_digits() -> InMemoryData:
    d = load_dataset("digits")
    n = 192  # a slice keeps every test in seconds
    return InMemoryData("digits-slice", d.train_images[:n], d.train_labels[:n], d.test_images[:96],
                        d.test_labels[:96], 10, d.mean, d.std, pad=1, flip=False)


@pytest.fixture(scope="module")
def teacher(small_digits):
    torch.manual_seed(0)
    return freeze(create_model("resnet8", num_classes=10))


def make_runs(methods, data, teacher, seed=0, epochs=2, overrides=None):
    runs = []
    for m in methods:
        torch.manual_seed(seed_for(seed, "init", "resnet8"))
        model = create_model("resnet8", num_classes=10)
        torch.manual_seed(seed_for(seed, "method", m))
        ctx = BuildContext(probe(model, data.input_shape, CPU, True), probe(teacher, data.input_shape, CPU, True),
                           10, data.train_labels)
        method = build_method(m, ctx, overrides or {"crd": {"nce_k": 64}})
        runs.append(StudentRun(f"{m}-s{seed}", model, method,
                               Recipe(epochs=epochs, batch_size=32, lr=0.05, lr_decay_epochs=[1]), seed))
    return runs


def train(runs, data, teacher, seed=0):
    return train_cohort(runs, data, CPU, teacher=teacher,
                        data_generator=torch.Generator().manual_seed(seed_for(seed, "data")))


def state(run):
    return {**{f"model.{k}": v for k, v in run.model.state_dict().items()},
            **{f"method.{k}": v for k, v in run.method.state_dict().items()}}


def metrics(run):
    return [{k: v for k, v in h.items() if "time" not in k and k != "images_per_s"} for h in run.history]


def assert_bitwise_equal(a, b):
    sa, sb = state(a), state(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert metrics(a) == metrics(b)


def test_teacher_is_frozen(small_digits, teacher):
    before = {k: v.clone() for k, v in teacher.state_dict().items()}  # weights and BN buffers
    runs = train(make_runs(["kd", "fitnet", "crd"], small_digits, teacher, epochs=1), small_digits, teacher)
    assert all(r.error is None for r in runs)
    assert not teacher.training
    assert all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_unfrozen_teacher_is_refused(small_digits):
    live = create_model("resnet8", num_classes=10)  # train mode: BN would drift
    with pytest.raises(ValueError, match="frozen"):
        train(make_runs(["kd"], small_digits, freeze(create_model("resnet8", num_classes=10)), epochs=1),
              small_digits, live)


def test_same_seed_is_bitwise_identical_and_other_seed_differs(small_digits, teacher):
    a = train(make_runs(["kd"], small_digits, teacher), small_digits, teacher)[0]
    b = train(make_runs(["kd"], small_digits, teacher), small_digits, teacher)[0]
    assert_bitwise_equal(a, b)
    c = train(make_runs(["kd"], small_digits, teacher, seed=1), small_digits, teacher, seed=1)[0]
    assert any(not torch.equal(v, state(c)[k]) for k, v in state(a).items())
    assert metrics(a) != metrics(c)


def test_cohort_equals_solo_runs_bitwise(small_digits, teacher):
    """One batch stream and one teacher pass for many students changes nothing in any of them."""
    methods = ["vanilla", "kd", "crd", "triplet", "at"]
    cohort = train(make_runs(methods, small_digits, teacher), small_digits, teacher)
    for m, in_cohort in zip(methods, cohort):
        solo = train(make_runs([m], small_digits, teacher), small_digits, teacher)[0]
        assert_bitwise_equal(in_cohort, solo)


def test_foreach_optimizer_gives_the_per_parameter_loops_bits(small_digits, teacher):
    """StudentRun's SGD runs foreach (faster on CPU); its updates equal PyTorch's per-parameter loop bit for bit."""
    fast, = make_runs(["fitnet"], small_digits, teacher)  # fitnet: the method's regressor is stepped too
    assert all(g["foreach"] is True for g in fast.optimizer.param_groups)
    loop, = make_runs(["fitnet"], small_digits, teacher)
    for g in loop.optimizer.param_groups:
        g["foreach"] = False
    train([fast], small_digits, teacher)
    train([loop], small_digits, teacher)
    assert_bitwise_equal(fast, loop)
    assert metrics(fast) == metrics(loop)


def test_history_records_every_term_and_accuracy(small_digits, teacher):
    run = train(make_runs(["rkd"], small_digits, teacher, epochs=2), small_digits, teacher)[0]
    assert [h["epoch"] for h in run.history] == [1, 2]
    assert [h["lr"] for h in run.history] == [0.05, pytest.approx(0.005)]  # decay after epoch 1
    h = run.history[-1]
    assert set(h["losses"]) == {"ce", "rkd_distance", "rkd_angle"}
    assert h["weighted_losses"]["rkd_angle"] == pytest.approx(50.0 * h["losses"]["rkd_angle"])
    assert h["loss"] == pytest.approx(sum(h["weighted_losses"].values()))
    assert 0.0 <= h["test_top1"] <= h["test_top5"] <= 100.0


def test_repdistiller_schedule():
    r = Recipe()  # 240 epochs, lr 0.05, x0.1 after epochs 150, 180, 210 (1-based, RepDistiller)
    lrs = {e + 1: r.lr_at(e) for e in range(240)}
    assert lrs[1] == lrs[150] == 0.05
    assert lrs[151] == pytest.approx(0.005) and lrs[180] == pytest.approx(0.005)
    assert lrs[181] == pytest.approx(0.0005) and lrs[211] == pytest.approx(0.00005)


def test_divergence_stops_the_run_with_epoch_and_step(small_digits, teacher):
    runs = make_runs(["kd", "vanilla"], small_digits, teacher, epochs=2)
    runs[0].recipe = Recipe(epochs=2, batch_size=32, lr=1e30)  # blows up within a few steps
    for g in runs[0].optimizer.param_groups:
        g["lr"] = 1e30
    train(runs, small_digits, teacher)
    assert isinstance(runs[0].error, DivergenceError)
    assert "not finite" in str(runs[0].error) and runs[0].error.epoch == 0
    assert runs[1].error is None and len(runs[1].history) == 2  # the cohort goes on


def test_kd_loss_hand_computed():
    from methods.kd import kd_loss

    # T=2, teacher logits (ln 3, 0), student (0, 0): p_t = (sqrt3, 1)/(sqrt3+1), p_s = (1/2, 1/2)
    # KL = 0.6339746*ln(1.2679492) + 0.3660254*ln(0.7320508)
    #    = 0.6339746*0.2374008 - 0.3660254*0.3119054 = 0.0363408; x T^2 = 0.1453631
    s = torch.zeros(1, 2, requires_grad=True)
    t = torch.tensor([[math.log(3.0), 0.0]])
    loss = kd_loss(s, t, T=2.0)
    assert loss.item() == pytest.approx(0.1453631, abs=1e-6)
    loss.backward()
    # d/ds = T * (p_s - p_t) / B = 2 * (0.5 - 0.6339746, 0.5 - 0.3660254)
    assert s.grad.tolist()[0] == pytest.approx([-0.2679492, 0.2679492], abs=1e-6)
    # T=1: p_t = (0.75, 0.25): KL = 0.75 ln 1.5 + 0.25 ln 0.5 = 0.1308120
    assert kd_loss(torch.zeros(1, 2), t, T=1.0).item() == pytest.approx(0.1308120, abs=1e-6)


def test_kd_matches_repdistiller_formula():
    import torch.nn.functional as F

    from methods.kd import kd_loss

    g = torch.Generator().manual_seed(0)
    s = torch.randn(8, 100, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(8, 100, generator=g, dtype=torch.float64)
    # RepDistiller distiller_zoo/KD.py DistillKL.forward
    ref = F.kl_div(F.log_softmax(s / 4, dim=1), F.softmax(t / 4, dim=1), reduction="sum") * 16 / 8
    (g_ref,) = torch.autograd.grad(ref, s)
    ours = kd_loss(s, t, 4.0)
    (g_ours,) = torch.autograd.grad(ours, s)
    assert torch.allclose(ours, ref, rtol=1e-10) and torch.allclose(g_ours, g_ref, rtol=1e-10)


def test_kd_defaults_are_repdistillers():
    from methods import method_defaults

    assert method_defaults("kd") == {"kd": {"T": 4.0, "gamma": 0.1, "alpha": 0.9}}
    # inside a composition KD's weight is 1 (RepDistiller's CRD+KD row: -r 1 -a 1 -b 0.8)
    combo = method_defaults("crd+kd")
    assert combo["kd"]["alpha"] == 1.0 and combo["crd"]["gamma"] == 1.0 and combo["crd"]["beta"] == 0.8


def _train_fast(data, teacher, fast, methods=("kd", "fitnet", "crd", "triplet")):
    runs = make_runs(list(methods), data, teacher, epochs=1)
    return train_cohort(runs, data, CPU, teacher=teacher, fast=fast,
                        data_generator=torch.Generator().manual_seed(seed_for(0, "data")))


def test_teacher_inference_mode_changes_no_bit(small_digits, teacher):
    base = {"amp": "fp32", "channels_last": False, "compile": False}
    a = _train_fast(small_digits, teacher, {**base, "teacher_inference_mode": False})
    b = _train_fast(small_digits, teacher, {**base, "teacher_inference_mode": True})
    for x, y in zip(a, b):
        assert x.error is None and y.error is None
        assert_bitwise_equal(x, y)


def test_cuda_fast_paths_run_on_cpu_too(small_digits, teacher):
    """bf16 autocast + channels_last + inference-mode teacher: the code path CUDA uses by default."""
    runs = _train_fast(small_digits, teacher, {"amp": "bf16", "channels_last": True,
                                               "teacher_inference_mode": True, "compile": False})
    for r in runs:
        assert r.error is None, r.error
        assert math.isfinite(r.history[-1]["loss"])
        assert r.model.conv1.weight.is_contiguous(memory_format=torch.channels_last)


def test_fast_path_defaults():
    from kdcore.recipe import FastPaths

    assert FastPaths().resolve(CPU) == {"amp": "fp32", "channels_last": False, "teacher_inference_mode": False,
                                        "compile": False}
    assert FastPaths().resolve(torch.device("cuda")) == {"amp": "bf16", "channels_last": True,
                                                         "teacher_inference_mode": True, "compile": False}
