"""The logit methods dkd, dist, ttm, wttm against independent transcriptions of their official code.

Each reference below is written from the official source named in its comment with other
primitives (loops over samples and classes, explicit exp / sum / sqrt, float64), so it shares no
code with ``methods/``. Value and gradient w.r.t. the student's logits are compared at rtol 1e-5 in
float32; one tiny case per method has its numbers written out by hand. The cifar100 preset's
per-pair values are checked to resolve.
"""
from __future__ import annotations


import pytest
import torch

from kdcore.config import load_preset, method_overrides
from methods import (Batch, BuildContext, ModelOutput, Progress, batch_coupling, build_method, method_class,
                     validate_method)

RTOL, ATOL = 1e-5, 1e-7


# --- helpers -------------------------------------------------------------------------------------
def out(logits: torch.Tensor) -> ModelOutput:
    return ModelOutput(logits=logits, features=[], embedding=None)  # type: ignore[arg-type]


def build(name: str, num_classes: int, **hp):
    ctx = BuildContext(None, None, num_classes, torch.zeros(4, dtype=torch.long))
    return build_method(name, ctx, {name: hp} if hp else None)


def weighted(method, s, t, y, progress: Progress | None = None) -> torch.Tensor:
    """The method's distillation loss as the harness sums it: sum of weight * term (CE excluded)."""
    if progress is not None:
        method.set_progress(progress)
    terms = method.losses(out(s), out(t), Batch(x=torch.zeros(len(y)), y=y, index=torch.arange(len(y))))
    weights = method.loss_weights()
    assert set(terms) == set(weights)
    return sum(weights[k] * v for k, v in terms.items())


def inputs(n=8, c=10, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    s = (scale * torch.randn(n, c, generator=g)).requires_grad_(True)
    t = scale * torch.randn(n, c, generator=g)
    y = torch.randint(0, c, (n,), generator=g)
    return s, t, y


def value_and_grad(fn, s: torch.Tensor):
    s = s.detach().clone().requires_grad_(True)
    v = fn(s)
    (g,) = torch.autograd.grad(v, s)
    return v.detach(), g


def check_against(ours, reference, s):
    """ours(s) in float32 against reference(s.double()) in float64: value and gradient."""
    v, g = value_and_grad(ours, s)
    rv, rg = value_and_grad(reference, s.detach().double())
    assert v.dtype == torch.float32
    torch.testing.assert_close(v.double(), rv, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(g.double(), rg, rtol=RTOL, atol=ATOL)


def softmax_loop(row: torch.Tensor) -> torch.Tensor:
    """softmax of one row by explicit exp and sum."""
    m = max(float(v) for v in row.detach())
    e = [torch.exp(v - m) for v in row]
    z = sum(e)
    return torch.stack([x / z for x in e])


# --- dkd -----------------------------------------------------------------------------------------
def ref_dkd(s, t, y, alpha, beta, T):
    """mdistiller mdistiller/distillers/DKD.py ``dkd_loss``: cat_mask on softmax(./T), log of the binary
    student probabilities, kl_div(size_average=False) * T^2 / batch; the non-target part subtracts
    1000 from the target logit / T; kl_div's terms with a zero target probability are 0."""
    n, c = s.shape
    tckd, nckd = 0.0, 0.0
    for i in range(n):
        ps, pt = softmax_loop(s[i] / T), softmax_loop(t[i] / T)
        gi = int(y[i])
        bs = [ps[gi], sum(ps[j] for j in range(c) if j != gi)]
        bt = [pt[gi], sum(pt[j] for j in range(c) if j != gi)]
        for k in range(2):
            tckd = tckd + bt[k] * (torch.log(bt[k]) - torch.log(bs[k]))
        shift = torch.tensor([1000.0 if j == gi else 0.0 for j in range(c)], dtype=s.dtype)
        ps2, pt2 = softmax_loop(s[i] / T - shift), softmax_loop(t[i] / T - shift)
        for j in range(c):
            if float(pt2[j]) > 0:  # the target's exp(-1000) underflows to 0 (and log(0) would poison autograd)
                nckd = nckd + pt2[j] * (torch.log(pt2[j]) - torch.log(ps2[j]))
    return (alpha * tckd * T ** 2 + beta * nckd * T ** 2) / n


@pytest.mark.parametrize("c,T,alpha,beta", [(10, 4.0, 1.0, 8.0), (5, 2.0, 0.5, 6.0), (100, 4.0, 1.0, 2.0)])
def test_dkd_matches_mdistiller(c, T, alpha, beta):
    m = build("dkd", c, T=T, alpha=alpha, beta=beta)
    s, t, y = inputs(n=6, c=c, seed=c)
    after_warmup = Progress(25.0, 240)
    check_against(lambda x: weighted(m, x, t, y, after_warmup),
                  lambda x: ref_dkd(x, t.double(), y, alpha, beta, T), s)


def test_dkd_hand_computed():
    # 3 classes, target 0, T = 2. Teacher logits 2*ln[4, 3, 1] -> p_t = [1/2, 3/8, 1/8]; student 0 -> 1/3 each.
    # TCKD = KL([1/2, 1/2] || [1/3, 2/3]) * T^2 = 0.5 ln(9/8) * 4 = 0.05889152 * 4 = 0.23556607
    # NCKD = KL([3/4, 1/4] || [1/2, 1/2]) * T^2 = (0.75 ln 1.5 + 0.25 ln 0.5) * 4 = 0.13081204 * 4 = 0.52324814
    m = build("dkd", 3, T=2.0)
    t = 2.0 * torch.log(torch.tensor([[4.0, 3.0, 1.0]]))
    s = torch.zeros(1, 3)
    terms = m.losses(out(s), out(t), Batch(torch.zeros(1), torch.tensor([0]), torch.tensor([0])))
    assert float(terms["dkd_tckd"]) == pytest.approx(0.23556607, rel=1e-5)
    assert float(terms["dkd_nckd"]) == pytest.approx(0.52324814, rel=1e-5)
    # weights at epoch 25 (past warm-up): alpha 1, beta 8 -> 0.23556607 + 8 * 0.52324814 = 4.42155119
    assert float(weighted(m, s, t, torch.tensor([0]), Progress(25.0, 240))) == pytest.approx(4.42155119, rel=1e-5)


@pytest.mark.parametrize("progress,ramp", [
    (Progress(0.0, 240), 1 / 20),            # first step: mdistiller's epoch 1
    (Progress(0.999, 240), 1 / 20),          # constant within the first epoch
    (Progress(1.0, 240), 2 / 20),            # second epoch: epoch 2
    (Progress.at(9, 390, 391, 240), 10 / 20),  # last step of the 10th epoch
    (Progress(18.5, 240), 19 / 20),
    (Progress(19.0, 240), 1.0),              # epoch 20 = warmup
    (Progress(200.3, 240), 1.0),
])
def test_dkd_warmup_is_mdistillers_per_epoch_ramp(progress, ramp):
    m = build("dkd", 10)
    m.set_progress(progress)
    w = m.loss_weights()
    assert w["dkd_tckd"] == pytest.approx(1.0 * ramp, rel=1e-12)
    assert w["dkd_nckd"] == pytest.approx(8.0 * ramp, rel=1e-12)
    assert m.ce_weight() == 1.0


# --- dist ----------------------------------------------------------------------------------------
def ref_pearson(a: list, b: list):
    """image_classification_sota lib/models/losses/dist_kd.py: cosine of centred vectors, eps 1e-8 on
    the product of the norms."""
    k = len(a)
    ma, mb = sum(a) / k, sum(b) / k
    cov = sum((a[j] - ma) * (b[j] - mb) for j in range(k))
    na = torch.sqrt(sum((a[j] - ma) ** 2 for j in range(k)))
    nb = torch.sqrt(sum((b[j] - mb) ** 2 for j in range(k)))
    return cov / (na * nb + 1e-8)


def ref_dist(s, t, T, kd_weight=2.0, beta=1.0, gamma=1.0):
    """DIST.forward (tau) and KDLoss (kd_loss_weight): kd_weight * (beta tau^2 inter + gamma tau^2 intra)."""
    n, c = s.shape
    ys = [softmax_loop(s[i] / T) for i in range(n)]
    yt = [softmax_loop(t[i] / T) for i in range(n)]
    inter = 1 - sum(ref_pearson(list(ys[i]), list(yt[i])) for i in range(n)) / n
    intra = 1 - sum(ref_pearson([ys[i][j] for i in range(n)], [yt[i][j] for i in range(n)])
                    for j in range(c)) / c
    return kd_weight * (beta * T ** 2 * inter + gamma * T ** 2 * intra)


@pytest.mark.parametrize("n,c,T", [(8, 10, 4.0), (5, 7, 1.0), (16, 100, 4.0)])
def test_dist_matches_official(n, c, T):
    m = build("dist", c, T=T)
    s, t, y = inputs(n=n, c=c, seed=n + c)
    check_against(lambda x: weighted(m, x, t, y), lambda x: ref_dist(x, t.double(), T), s)
    m2 = build("dist", c, T=T, beta=0.5, inter=2.0, intra=0.25)
    check_against(lambda x: weighted(m2, x, t, y),
                  lambda x: ref_dist(x, t.double(), T, kd_weight=0.5, beta=2.0, gamma=0.25), s)


def test_dist_hand_computed():
    # T = 2, logits 2*ln(probabilities). Student rows [1/2, 1/2], [3/4, 1/4]; teacher rows [3/4, 1/4], [1/4, 3/4].
    # inter: row 1 of the student is constant -> Pearson 0 / (0 + 1e-8) = 0; row 2 -> -1.
    #        (1 - (0 - 1) / 2) * T^2 = 1.5 * 4 = 6
    # intra: class 0 student [1/2, 3/4] vs teacher [3/4, 1/4] -> -1; class 1 likewise -> -1.
    #        (1 - (-1)) * T^2 = 2 * 4 = 8   (eps: -0.0625 / (0.0625 + 1e-8) changes it by 1.6e-7 relative)
    m = build("dist", 2, T=2.0)
    s = 2.0 * torch.log(torch.tensor([[0.5, 0.5], [0.75, 0.25]]))
    t = 2.0 * torch.log(torch.tensor([[0.75, 0.25], [0.25, 0.75]]))
    y = torch.tensor([0, 1])
    terms = m.losses(out(s), out(t), Batch(torch.zeros(2), y, torch.arange(2)))
    assert float(terms["dist_inter"]) == pytest.approx(6.0, rel=1e-5)
    assert float(terms["dist_intra"]) == pytest.approx(8.0, rel=1e-5)
    assert m.loss_weights() == {"dist_inter": 2.0, "dist_intra": 2.0} and m.ce_weight() == 1.0
    assert float(weighted(m, s, t, y)) == pytest.approx(28.0, rel=1e-5)


def test_dist_declares_its_batch_coupling():
    assert method_class("dist").couples_batch
    assert "intra-class" in batch_coupling("dist")
    assert batch_coupling("dist", {"dist": {"intra": 0.0}}) is None
    for name in ("dkd", "ttm", "wttm"):
        assert batch_coupling(name) is None and not method_class(name).needs_features


# --- ttm / wttm ----------------------------------------------------------------------------------
def ref_ttm(s, t, l, beta, weighted_by_norm):
    """zkxufo/TTM distiller_zoo/ttm.py (TTM) and wttm.py (WTTM): p_t = softmax(y_t) ** l, norm = its sum,
    p_t / norm against log_softmax(y_s); KL summed over classes; mean over the batch of KL (TTM) or of
    norm * KL (WTTM); helper/loops.py weights it by -b (beta)."""
    n, c = s.shape
    total = 0.0
    for i in range(n):
        pt = softmax_loop(t[i])
        powered = [pt[j] ** l for j in range(c)]
        norm = sum(powered)
        ps = softmax_loop(s[i])
        kl = sum((powered[j] / norm) * (torch.log(powered[j] / norm) - torch.log(ps[j])) for j in range(c))
        total = total + (norm * kl if weighted_by_norm else kl)
    return beta * total / n


@pytest.mark.parametrize("name", ["ttm", "wttm"])
@pytest.mark.parametrize("c,l,beta", [(10, 0.1, 45.0), (10, 0.5, 2.0), (100, 0.2, 4.0), (7, 1.0, 1.0)])
def test_ttm_and_wttm_match_official(name, c, l, beta):
    m = build(name, c, l=l, beta=beta)
    s, t, y = inputs(n=6, c=c, seed=c + 1)
    check_against(lambda x: weighted(m, x, t, y), lambda x: ref_ttm(x, t.double(), l, beta, name == "wttm"), s)


def test_ttm_with_l_1_is_kd_at_T_1():
    """l = 1: the transformed teacher is the teacher itself, TTM is plain KL(p_t || p_s) (no T^2 at T = 1)."""
    s, t, y = inputs(n=4, c=5)
    ttm = build("ttm", 5, l=1.0, beta=1.0)
    kd = build("kd", 5, T=1.0, alpha=1.0)
    torch.testing.assert_close(weighted(ttm, s, t, y), weighted(kd, s, t, y), rtol=1e-6, atol=1e-7)


def test_ttm_and_wttm_hand_computed():
    # l = 1/2. Sample 1: teacher probabilities [0.64, 0.36] -> sqrt [0.8, 0.6], U = 1.4, q = [4/7, 3/7];
    #   student logits 0 -> [1/2, 1/2]; KL = 4/7 ln(8/7) + 3/7 ln(6/7) = 0.01023908.
    # Sample 2: teacher and student uniform -> KL = 0, U = 2 sqrt(1/2) = 1.41421356.
    # TTM  = (0.01023908 + 0) / 2 = 0.00511954
    # WTTM = (1.4 * 0.01023908 + 1.41421356 * 0) / 2 = 0.00716735
    t = torch.log(torch.tensor([[0.64, 0.36], [0.5, 0.5]]))
    s = torch.zeros(2, 2)
    y = torch.tensor([0, 1])
    b = Batch(torch.zeros(2), y, torch.arange(2))
    ttm, wttm = build("ttm", 2, l=0.5), build("wttm", 2, l=0.5)
    assert float(ttm.losses(out(s), out(t), b)["ttm"]) == pytest.approx(0.00511954, rel=1e-5)
    assert float(wttm.losses(out(s), out(t), b)["wttm"]) == pytest.approx(0.00716735, rel=1e-5)
    assert ttm.loss_weights() == {"ttm": 45.0} and ttm.ce_weight() == 1.0
    assert wttm.loss_weights() == {"wttm": 4.0} and wttm.ce_weight() == 1.0


# --- the cifar100 preset -------------------------------------------------------------------------
DKD_BETA = {  # mdistiller configs/cifar100/dkd/*.yaml; 8.0 (cfg.py) where the yaml sets none or none exists
    "wrn_40_2:wrn_16_2": 6.0, "wrn_40_2:wrn_40_1": 6.0, "resnet56:resnet20": 2.0, "resnet110:resnet20": 8.0,
    "resnet110:resnet32": 2.0, "resnet32x4:resnet8x4": 8.0, "vgg13:vgg8": 6.0, "vgg13:MobileNetV2": 6.0,
    "ResNet50:MobileNetV2": 8.0, "ResNet50:vgg8": 8.0, "resnet32x4:ShuffleV1": 8.0, "resnet32x4:ShuffleV2": 8.0,
    "wrn_40_2:ShuffleV1": 8.0,
}


def test_cifar100_preset_resolves_the_per_pair_values():
    cfg = load_preset("cifar100")
    assert {"dkd", "dist", "ttm", "wttm"} <= set(cfg["methods"])
    assert set(cfg["pairs"]) == set(DKD_BETA)
    for pair in cfg["pairs"]:
        over = method_overrides(cfg, pair)
        dkd = validate_method("dkd", over)["dkd"]
        assert dkd == {"T": 4.0, "gamma": 1.0, "alpha": 1.0, "beta": DKD_BETA[pair], "warmup": 20.0}, pair
        # TTM: the README's vgg13 -> vgg8 values (the defaults); no pair has published WTTM / DIST values here
        assert validate_method("ttm", over)["ttm"] == {"l": 0.1, "gamma": 1.0, "beta": 45.0}, pair
        assert validate_method("wttm", over)["wttm"] == {"l": 0.2, "gamma": 1.0, "beta": 4.0}, pair
        assert validate_method("dist", over)["dist"] == {"T": 4.0, "gamma": 1.0, "beta": 2.0, "inter": 1.0,
                                                         "intra": 1.0}, pair
    assert method_overrides(cfg, "vgg13:vgg8")["ttm"] == {"l": 0.1, "beta": 45.0}
