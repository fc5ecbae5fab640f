"""ctkd and nkd against independent transcriptions of their reference formulas, hand-computed cases,
CTKD's reversed temperature gradient and lambda schedule, and NKD's removal of the target class.

The transcriptions below use per-sample loops and explicit exp / log / sum in float64 (the methods
use log_softmax / softmax / gather / masks in float32), so they share no code with the methods.
"""
from __future__ import annotations

import math

import pytest
import torch

from kdcore.data import InMemoryData
from kdcore.train import StudentRun
from kdcore.recipe import Recipe
from kdcore import KDModel
from methods import Batch, BuildContext, HyperparameterError, ModelOutput, Progress, build_method, validate_method
from methods.ctkd import cosine_lambda
from methods.nkd import nkd_terms

RTOL = 1e-5
ATOL = 1e-7


def _ctx(num_classes: int = 5) -> BuildContext:
    return BuildContext(None, None, num_classes, torch.zeros(10, dtype=torch.long))


def _out(logits: torch.Tensor) -> ModelOutput:
    return ModelOutput(logits, [], None)  # type: ignore[arg-type]


def _batch(y: torch.Tensor, progress: Progress = Progress()) -> Batch:
    return Batch(torch.zeros(len(y), 1), y, torch.arange(len(y)), progress=progress)


def _logits(seed: int, n: int = 6, c: int = 7, scale: float = 3.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, c, generator=g) * scale, torch.randn(n, c, generator=g) * scale,
            torch.randint(0, c, (n,), generator=g))


def _close(a, b, what: str):
    a = torch.as_tensor(a, dtype=torch.float64)
    b = torch.as_tensor(b, dtype=torch.float64)
    assert torch.allclose(a, b, rtol=RTOL, atol=ATOL), f"{what}: {a} vs {b}"


# --- CTKD ---------------------------------------------------------------------------------------

def ref_ctkd(s: list[list[float]], t: list[list[float]], theta, t_start: float, t_range: float):
    """CTKD as zhengli97/CTKD computes it, element by element (float64):
    helper/loops.py: temp = opt.t_start + opt.t_end * torch.sigmoid(Global_T(...));
    distiller_zoo/KD.py DistillKL: KLDivLoss(reduction='batchmean')(log_softmax(y_s/T), softmax(y_t/T)) * T * T.
    ``theta`` may be a float64 tensor requiring grad (the UN-reversed gradient)."""
    T = t_start + t_range * (1.0 / (1.0 + torch.exp(-theta)))
    total = 0.0
    for row_s, row_t in zip(s, t):
        zs = sum(torch.exp(v / T) for v in row_s)
        zt = sum(torch.exp(v / T) for v in row_t)
        kl = 0.0
        for vs, vt in zip(row_s, row_t):
            p_t = torch.exp(vt / T) / zt
            log_p_s = vs / T - torch.log(zs)
            kl = kl + p_t * (torch.log(p_t) - log_p_s)
        total = total + kl
    return total / len(s) * T * T, T


def _ctkd(**hp):
    return build_method("ctkd", _ctx(), {"ctkd": hp} if hp else None)


@pytest.mark.parametrize("epoch", [0.0, 3.5, 9.0, 57.25])
def test_ctkd_value_and_gradients_match_the_reference(epoch):
    s, t, y = _logits(0)
    m = _ctkd()
    with torch.no_grad():
        m.temperature.theta.fill_(0.3)
    progress = Progress(epoch, 240)
    m.set_progress(progress)
    s = s.requires_grad_()
    terms = m.losses(_out(s), _out(t), _batch(y, progress))
    terms["ctkd"].backward()

    theta64 = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    s64 = s.detach().double().requires_grad_()
    rows_s = [[s64[i, j] for j in range(s.shape[1])] for i in range(s.shape[0])]
    rows_t = [[float(v) for v in row] for row in t]
    ref, T = ref_ctkd(rows_s, rows_t, theta64, 1.0, 20.0)
    g_s, g_theta = torch.autograd.grad(ref, (s64, theta64))

    _close(terms["ctkd"], ref, "value")
    _close(terms["ctkd_T"], T, "logged temperature")
    _close(s.grad, g_s, "gradient to the student logits")
    # gradient reversal: theta receives lambda * dL/dtheta, lambda = CosineDecay at the 1-based epoch
    lam = cosine_lambda(math.floor(epoch) + 1, 0.0, -1.0, 10.0)
    assert lam < 0
    assert float(m.temperature.theta.grad) * float(g_theta.detach()) < 0  # opposite sign: theta ascends the loss
    # dL/dT = 2 T KL + T^2 dKL/dT nearly cancels (T^2 KL hardly depends on T at large T), so in float32 the
    # theta gradient carries ~1e-4 relative rounding error whatever the implementation; it is checked
    # at rtol 1e-5 with the same method in float64, and at 1e-3 in float32.
    assert torch.allclose(m.temperature.theta.grad.double(), lam * g_theta, rtol=1e-3)
    m64 = _ctkd().double()
    with torch.no_grad():
        m64.temperature.theta.fill_(0.3)
    m64.set_progress(progress)
    m64.losses(_out(s.detach().double()), _out(t.double()), _batch(y, progress))["ctkd"].backward()
    _close(m64.temperature.theta.grad, lam * g_theta, "reversed, scaled gradient to theta (float64)")


def test_ctkd_hand_computed_case():
    # theta = 0: T = 1 + 20 * sigmoid(0) = 11. One sample, two classes.
    # s = [0, 0] -> p_s = [1/2, 1/2]; t = [11 ln 3, 0] -> p_t = softmax([ln 3, 0]) = [3/4, 1/4]
    # KL = 3/4 ln(3/4 / 1/2) + 1/4 ln(1/4 / 1/2) = 0.75 ln 1.5 + 0.25 ln 0.5 = 0.1308120360
    # ctkd = 11^2 * 0.1308120360 = 15.828256349
    # d ctkd / d s = T^2 * (p_s - p_t) / T = 11 * ([0.5, 0.5] - [0.75, 0.25]) = [-2.75, 2.75]
    m = _ctkd()
    with torch.no_grad():
        m.temperature.theta.zero_()
    s = torch.zeros(1, 2, requires_grad=True)
    t = torch.tensor([[11 * math.log(3.0), 0.0]])
    terms = m.losses(_out(s), _out(t), _batch(torch.tensor([0])))
    assert float(terms["ctkd_T"]) == pytest.approx(11.0, rel=1e-6)
    assert float(terms["ctkd"].detach()) == pytest.approx(15.828256349, rel=1e-5)
    terms["ctkd"].backward()
    assert s.grad.tolist()[0] == pytest.approx([-2.75, 2.75], rel=1e-5)


def test_ctkd_default_init_temperature():
    # Global_T: theta = torch.ones(1) -> T = 1 + 20 * sigmoid(1) = 1 + 20 * 0.7310585786 = 15.621171573
    m = _ctkd()
    assert m.temperature.theta.tolist() == [1.0] and m.temperature.theta.requires_grad
    assert float(m.temperature(0.0).detach()) == pytest.approx(15.621171573, rel=1e-6)
    assert m.hparams == {"gamma": 0.1, "alpha": 0.9, "t_start": 1.0, "t_range": 20.0,
                         "decay_max": 0.0, "decay_min": -1.0, "decay_loops": 10.0}


@pytest.mark.parametrize("epoch,expected", [
    (0.0, -(1 - math.cos(math.pi / 10)) / 2),     # 1-based epoch 1: -0.0244717
    (0.999, -(1 - math.cos(math.pi / 10)) / 2),   # constant within the epoch
    (1.0, (math.cos(math.pi / 5) + 1) / 2 - 1),   # epoch 2: -0.0954915
    (4.0, -0.5),                                   # epoch 5: cos(pi/2) = 0
    (8.5, (math.cos(9 * math.pi / 10) + 1) / 2 - 1),  # epoch 9: -0.9755283
    (9.0, -1.0),                                   # epoch 10 = decay_loops: decay_min
    (239.9, -1.0),                                 # clamped afterwards
])
def test_ctkd_lambda_follows_the_cosine_schedule_at_the_1_based_epoch(epoch, expected):
    # train_student.py: for epoch in range(1, epochs + 1): decay_value = CosineDecay(0, -1, 10).get_value(epoch)
    # get_value(i): i clamped to [0, num_loops]; (cos(i pi / num_loops) + 1) / 2 * (max - min) + min
    m = _ctkd()
    m.set_progress(Progress(epoch, 240))
    assert m.grl_lambda() == pytest.approx(expected, abs=1e-12)


def test_ctkd_lambda_other_schedule():
    m = _ctkd(decay_max=0.5, decay_min=-2.0, decay_loops=4.0)
    for epoch, i in [(0.0, 1), (1.7, 2), (2.0, 3), (3.0, 4), (50.0, 4)]:
        m.set_progress(Progress(epoch, 100))
        expected = (math.cos(i * math.pi / 4) + 1) / 2 * 2.5 - 2.0
        assert m.grl_lambda() == pytest.approx(expected, abs=1e-12), epoch
    assert cosine_lambda(-3, 0.5, -2.0, 4.0) == pytest.approx(0.5)  # i < 0 -> 0 -> decay_max


def test_ctkd_gradient_reversal_sign_and_magnitude_alone():
    # the temperature's backward multiplies by lambda: compare with autograd of the un-reversed map
    m = _ctkd()
    for lam in (-1.0, -0.25, 0.0, 0.7):
        m.zero_grad()
        T = m.temperature(lam)
        (3.0 * T).backward()
        sig = 1 / (1 + math.exp(-1.0))
        plain = 3.0 * 20.0 * sig * (1 - sig)  # d(3 T)/d theta without reversal
        assert float(m.temperature.theta.grad) == pytest.approx(lam * plain, rel=1e-6, abs=1e-12)


@pytest.mark.parametrize("t_start,t_range", [(1.0, 20.0), (2.0, 3.0)])
def test_ctkd_temperature_stays_in_range(t_start, t_range):
    m = _ctkd(t_start=t_start, t_range=t_range)
    for theta in (-1e4, -30.0, -2.0, 0.0, 1.0, 5.0, 30.0, 1e4):
        with torch.no_grad():
            m.temperature.theta.fill_(theta)
        T = float(m.temperature(-1.0).detach())
        assert t_start <= T <= t_start + t_range, (theta, T)
    with torch.no_grad():
        m.temperature.theta.fill_(-1e4)
    assert float(m.temperature(-1.0).detach()) == t_start
    with torch.no_grad():
        m.temperature.theta.fill_(1e4)
    assert float(m.temperature(-1.0).detach()) == t_start + t_range


def test_ctkd_hparam_relation():
    with pytest.raises(HyperparameterError, match="ctkd.decay_min must be <= ctkd.decay_max"):
        validate_method("ctkd", {"ctkd": {"decay_min": 1.0}})
    with pytest.raises(HyperparameterError, match="ctkd.t_range must be > 0"):
        validate_method("ctkd", {"ctkd": {"t_range": 0.0}})


class _Tiny(KDModel):
    def __init__(self, num_classes: int):
        super().__init__()
        self.fc = torch.nn.Linear(3 * 4 * 4, num_classes)

    def forward_kd(self, x, preact=False):
        e = x.flatten(1)
        return ModelOutput(self.fc(e), [x], e)


def test_ctkd_in_the_harness_logs_T_with_weight_zero_and_trains_theta():
    """kdcore/train.py step: zero-weight terms are left out of the total but logged (epoch mean)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (8, 3, 4, 4), generator=g, dtype=torch.uint8)
    y = torch.arange(8) % 5
    data = InMemoryData("fake", x, y, x, y, 5, (0.5,) * 3, (0.25,) * 3, pad=0, flip=False)
    torch.manual_seed(0)
    student, teacher = _Tiny(5), _Tiny(5).eval()
    method = build_method("ctkd", _ctx())
    run = StudentRun("ctkd", student, method, Recipe(batch_size=8, epochs=2), seed=0)
    assert any(p is method.temperature.theta for group in run.optimizer.param_groups for p in group["params"])
    run.begin_epoch(0)
    bx, by, bi = next(data.epoch_batches(8, torch.Generator().manual_seed(1), torch.device("cpu")))
    with torch.no_grad():
        t_out = teacher.forward_kd(bx)
    theta0 = float(method.temperature.theta.detach())
    T0 = 1 + 20 / (1 + math.exp(-theta0))
    total = run.step(bx, by, bi, t_out, data, torch.device("cpu"), 0, 0)
    assert float(method.temperature.theta.detach()) != theta0  # theta trained
    entry = run.end_epoch(0, data, torch.device("cpu"), 0.0)
    assert entry["losses"]["ctkd_T"] == pytest.approx(T0, rel=1e-6)
    assert "ctkd_T" not in entry["weighted_losses"]
    assert float(total) == pytest.approx(0.1 * entry["losses"]["ce"] + 0.9 * entry["losses"]["ctkd"], rel=1e-5)


# --- NKD ----------------------------------------------------------------------------------------

def ref_nkd(s, t, y, T: float, remove_target: bool = True):
    """NKD as yzd-v/cls_KD mmcls/models/dis_losses/nkd.py (commit 9466b3f, the paper's formula) computes it,
    element by element (float64):
      loss_t   = -mean_n( softmax(t)[n, y_n] (detached) * log_softmax(s)[n, y_n] )
      loss_non = -T^2 * mean_n sum_{c != y_n} softmax(t[n, c != y_n] / T)_c * log_softmax(s[n, c != y_n] / T)_c
    ``remove_target=False`` is the code before 9466b3f (cls_KD issue #16): the mask kept every class."""
    target_sum = 0.0
    non_sum = 0.0
    for row_s, row_t, yn in zip(s, t, y):
        zs = sum(torch.exp(v) for v in row_s)
        zt = sum(math.exp(v) for v in row_t)
        target_sum = target_sum + (math.exp(row_t[yn]) / zt) * (row_s[yn] - torch.log(zs))
        keep = [c for c in range(len(row_s)) if c != yn or not remove_target]
        zs_nt = sum(torch.exp(row_s[c] / T) for c in keep)
        zt_nt = sum(math.exp(row_t[c] / T) for c in keep)
        ce = 0.0
        for c in keep:
            ce = ce + (math.exp(row_t[c] / T) / zt_nt) * (row_s[c] / T - torch.log(zs_nt))
        non_sum = non_sum + ce
    n = len(s)
    return -target_sum / n, -non_sum / n * T * T


def _nkd(**hp):
    return build_method("nkd", _ctx(), {"nkd": hp} if hp else None)


@pytest.mark.parametrize("seed,T", [(0, 3.0), (1, 1.0), (2, 4.5)])
def test_nkd_value_and_gradient_match_the_reference(seed, T):
    s, t, y = _logits(seed)
    m = _nkd(T=T)
    s = s.requires_grad_()
    terms = m.losses(_out(s), _out(t), _batch(y))
    w = m.loss_weights()
    assert w == {"nkd_target": 1.0, "nkd_nontarget": 3.5} and m.ce_weight() == 1.0
    (w["nkd_target"] * terms["nkd_target"] + w["nkd_nontarget"] * terms["nkd_nontarget"]).backward()

    s64 = s.detach().double().requires_grad_()
    rows_s = [[s64[i, j] for j in range(s.shape[1])] for i in range(s.shape[0])]
    rows_t = [[float(v) for v in row] for row in t]
    ref_t, ref_non = ref_nkd(rows_s, rows_t, y.tolist(), T)
    (g_s,) = torch.autograd.grad(ref_t + 3.5 * ref_non, (s64,))
    _close(terms["nkd_target"], ref_t, "target term")
    _close(terms["nkd_nontarget"], ref_non, "non-target term")
    _close(s.grad, g_s, "gradient to the student logits")


def test_nkd_teacher_probability_is_detached():
    s, t, y = _logits(3)
    t = t.requires_grad_()
    target_term, _ = nkd_terms(s, t, y, 3.0)
    assert not target_term.requires_grad  # no path to the teacher through the target term


def test_nkd_hand_computed_case():
    # one sample, C = 3, y = 0, T = 2; s = [1, 0, 0], t = [5, 2 ln 3, 0]
    # target: softmax(t)[0] = e^5 / (e^5 + 9 + 1) = 148.4131591 / 158.4131591 = 0.9368739311
    #         log softmax(s)[0] = 1 - ln(e + 2) = -0.5514447139
    #         nkd_target = 0.9368739311 * 0.5514447139 = 0.5166341769
    # non-target (classes 1, 2): q_t = softmax([2 ln 3, 0] / 2) = [3/4, 1/4], q_s = softmax([0, 0] / 2) = [1/2, 1/2]
    #         nkd_nontarget = -T^2 (3/4 ln 1/2 + 1/4 ln 1/2) = 4 ln 2 = 2.7725887222
    # gradients: d target / d s = -p_t[0] (onehot_0 - softmax(s)), softmax(s) = [0.5761168848, 0.2119415576, 0.2119415576]
    #              = [-0.3971250405, 0.1985625202, 0.1985625202]
    #            d non / d s = T (q_s - q_t) on classes 1, 2 = 2 ([0.5, 0.5] - [0.75, 0.25]) = [-0.5, 0.5]; 0 on class 0
    s = torch.tensor([[1.0, 0.0, 0.0]], requires_grad=True)
    t = torch.tensor([[5.0, 2 * math.log(3.0), 0.0]])
    y = torch.tensor([0])
    target_term, non = nkd_terms(s, t, y, 2.0)
    assert float(target_term.detach()) == pytest.approx(0.5166341769, rel=1e-5)
    assert float(non.detach()) == pytest.approx(2.7725887222, rel=1e-5)
    (g_target,) = torch.autograd.grad(target_term, s, retain_graph=True)
    (g_non,) = torch.autograd.grad(non, s)
    assert g_target.tolist()[0] == pytest.approx([-0.3971250405, 0.1985625202, 0.1985625202], rel=1e-5)
    assert g_non.tolist()[0] == pytest.approx([0.0, -0.5, 0.5], rel=1e-5, abs=1e-7)


def test_nkd_removes_the_target_class_unlike_the_buggy_mask():
    # cls_KD before 9466b3f: mask = ones.scatter_(1, label, 1) -> all True -> the target class stayed in.
    s = torch.tensor([[4.0, 1.0, -1.0, 0.5]], requires_grad=True)
    t = torch.tensor([[6.0, 0.0, 2.0, -1.0]])
    y = torch.tensor([0])
    T = 3.0
    _, non = nkd_terms(s, t, y, T)
    rows_s, rows_t = [s[0].tolist()], [t[0].tolist()]
    paper = ref_nkd([[torch.tensor(v, dtype=torch.float64) for v in rows_s[0]]], rows_t, [0], T)[1]
    buggy = ref_nkd([[torch.tensor(v, dtype=torch.float64) for v in rows_s[0]]], rows_t, [0], T,
                    remove_target=False)[1]
    _close(non, paper, "paper formula")
    assert abs(float(buggy.detach()) - float(paper.detach())) > 0.1, (float(buggy.detach()), float(paper.detach()))
    # the non-target term does not depend on the target logits at all (neither value nor gradient)
    s2, t2 = s.detach().clone(), t.clone()
    s2[0, 0], t2[0, 0] = -7.0, 11.0
    _, non2 = nkd_terms(s2, t2, y, T)
    assert float(non2.detach()) == pytest.approx(float(non.detach()), rel=1e-6)
    (g,) = torch.autograd.grad(non, s)
    assert float(g[0, 0]) == 0.0
    # the buggy version does depend on them
    buggy2 = ref_nkd([[torch.tensor(float(v), dtype=torch.float64) for v in s2[0]]],
                     [[float(v) for v in t2[0]]], [0], T, remove_target=False)[1]
    assert abs(float(buggy2.detach()) - float(buggy.detach())) > 0.1


def test_nkd_nontarget_is_cross_entropy_same_gradient_as_kl():
    # the code's -sum q_t log q_s = KL(q_t || q_s) + H(q_t): same gradient, value offset by T^2 H(q_t)
    s, t, y = _logits(4)
    s = s.requires_grad_()
    T = 3.0
    _, non = nkd_terms(s, t, y, T)
    keep = torch.ones_like(s, dtype=torch.bool).scatter_(1, y[:, None], False)
    q_t = torch.softmax(t[keep].view(len(y), -1) / T, 1)
    log_q_s = torch.log_softmax(s[keep].view(len(y), -1) / T, 1)
    kl = (q_t * (q_t.log() - log_q_s)).sum(1).mean() * T * T
    entropy = -(q_t * q_t.log()).sum(1).mean() * T * T
    _close(non, kl + entropy, "cross-entropy = KL + entropy")
    g_non, = torch.autograd.grad(non, s)
    g_kl, = torch.autograd.grad(kl, s)
    assert torch.allclose(g_non, g_kl, rtol=1e-5, atol=1e-6)


def test_nkd_defaults():
    m = _nkd()
    assert m.hparams == {"T": 3.0, "gamma": 1.0, "nkd_gamma": 3.5}
    assert not m.needs_features and not list(m.parameters())
