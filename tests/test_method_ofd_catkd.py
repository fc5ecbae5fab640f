"""ofd (Heo et al. 2019) and cat_kd (Guo et al. 2023) against independent transcriptions of their
official code (clovaai/overhaul-distillation ``CIFAR-100/distiller.py``, mdistiller ``OFD.py``;
GzyAftermath/CAT-KD ``CAT_KD.py``), hand-computed cases, the teacher-BN lookup on every cifar100
teacher architecture, the model contract fields they read, and cohort = solo training."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdcore.config import load_preset, method_overrides, parse_pair
from benchmarks.grid import probe
from kdcore.models import create_model
from kdcore.train import freeze
from methods import BuildContext, ModelOutput, PairNotSupported, build_method, method_defaults
from methods.cat_kd import cat_loss, class_activation_maps
from methods.ofd import bn_margin, ofd_stage_loss
from test_harness import assert_bitwise_equal
from cohorts import digits_slice, make_run, random_teacher, train

CPU = torch.device("cpu")
RTOL, ATOL = 1e-5, 1e-6
PAIRS = load_preset("cifar100")["pairs"]
TEACHERS = sorted({parse_pair(p)[0] for p in PAIRS})
MODELS = sorted({name for p in PAIRS for name in parse_pair(p)})


# --- OFD: the margin ------------------------------------------------------------------------------
def phi_cdf(x: float) -> float:
    """The standard normal distribution function, written out."""
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def ref_margin(gamma: float, beta: float) -> float:
    """clovaai ``get_margin_from_BN`` for one channel: E[x | x < 0], x ~ N(beta, gamma^2)."""
    s, m = abs(gamma), beta
    if phi_cdf(-m / s) > 0.001:
        return -s * math.exp(-(m / s) ** 2 / 2) / math.sqrt(2 * math.pi) / phi_cdf(-m / s) + m
    return -3 * s


def test_margin_of_one_bn_channel_by_hand():
    # gamma = -2 (s = |gamma| = 2), beta = 0.5: z = m / s = 0.25
    # phi(0.25) = exp(-0.03125) / sqrt(2 pi) = 0.386668..., Phi(-0.25) = 0.401294...
    # margin = 0.5 - 2 * 0.386668 / 0.401294 = -1.4271080
    pdf = math.exp(-0.25 ** 2 / 2) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1 + math.erf(-0.25 / math.sqrt(2)))
    by_hand = 0.5 - 2.0 * pdf / cdf
    assert by_hand == pytest.approx(-1.4271080, abs=1e-6)
    got = bn_margin(torch.tensor([-2.0]), torch.tensor([0.5]))
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(by_hand, rel=1e-6)
    # Phi(-10) < 0.001: the margin is -3 s
    assert bn_margin(torch.tensor([1.5]), torch.tensor([10.0])).item() == pytest.approx(-4.5)
    # a negative mean: most of the mass is negative, the margin lies just below the mean
    assert bn_margin(torch.tensor([0.5]), torch.tensor([-1.0])).item() == pytest.approx(ref_margin(0.5, -1.0), rel=1e-6)
    # weight 0 (the references divide by zero): the limit min(beta, 0)
    assert bn_margin(torch.tensor([0.0, 0.0]), torch.tensor([-0.3, 0.3])).tolist() == pytest.approx([-0.3, 0.0])


def test_margin_matches_the_reference_rule_channel_by_channel():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(200, generator=g) * 2
    b = torch.randn(200, generator=g) * 3
    b[:5] = torch.tensor([20.0, 5.0, 3.1, -8.0, 0.0])  # both branches of the rule
    got = bn_margin(w, b)
    want = torch.tensor([ref_margin(float(wi), float(bi)) for wi, bi in zip(w, b)], dtype=torch.float32)
    torch.testing.assert_close(got, want, rtol=RTOL, atol=ATOL)
    assert (got <= 0).all()


# --- OFD: the partial L2 ---------------------------------------------------------------------------
def test_partial_l2_by_hand():
    margin = torch.tensor([-1.0])
    r = torch.tensor([0.5, -3.0, -3.0, 1.0, -1.0]).view(1, 1, 1, 5)
    t = torch.tensor([-2.0, -2.0, 2.0, -0.5, -0.5]).view(1, 1, 1, 5)
    # targets max(t, -1) = [-1, -1, 2, -0.5, -0.5]
    #  r > target:           (0.5 + 1)^2 = 2.25
    #  r <= target <= 0:     ignored
    #  target > 0:           (-3 - 2)^2  = 25
    #  r > target:           (1 + 0.5)^2 = 2.25
    #  r <= target <= 0:     ignored
    assert ofd_stage_loss(r, t, margin).item() == pytest.approx(29.5)


def ref_ofd_clovaai(s_pre, t_pre, convs, bn_params, margins):
    """clovaai ``Distiller.forward`` + ``distillation_loss`` (connector written out as conv + batch-stat
    BN), with mdistiller's ``_align_list`` (last stages) and teacher pooling; the sum over stages / B."""
    n = min(len(s_pre), len(t_pre))
    s_pre, t_pre = s_pre[-n:], t_pre[-n:]
    total = 0
    for i in range(n):
        w, gamma, beta = convs[i], *bn_params[i]
        r = F.batch_norm(F.conv2d(s_pre[i], w), None, None, gamma, beta, training=True, eps=1e-5)
        t = t_pre[i]
        if t.shape[-2:] != r.shape[-2:]:
            t = F.adaptive_avg_pool2d(t, r.shape[-2:])
        target = torch.max(t, margins[i].unsqueeze(1).unsqueeze(2).unsqueeze(0))
        loss = F.mse_loss(r, target, reduction="none")
        loss = loss * ((r > target) | (target > 0)).float()
        total = total + loss.sum() / 2 ** (n - i - 1)
    return total / s_pre[0].shape[0]


def ref_ofd_mdistiller(s_pre, t_pre, convs, bn_params, margins):
    """mdistiller ``OFD.ofd_loss`` / ``feat_loss``: three masked terms, ``.mean(dim=0).sum()``. ``margins``
    are passed per paired stage (as ours); mdistiller's own list is one per teacher BN, not aligned, which
    differs only when the teacher has more stages (methods/ofd.py)."""
    n = min(len(s_pre), len(t_pre))
    s_pre, t_pre = s_pre[-n:], t_pre[-n:]
    total = 0
    for i in range(n):
        w, gamma, beta = convs[i], *bn_params[i]
        source = F.batch_norm(F.conv2d(s_pre[i], w), None, None, gamma, beta, training=True, eps=1e-5)
        target = F.adaptive_avg_pool2d(t_pre[i], source.shape[-2:])
        margin = margins[i].view(1, -1, 1, 1)
        loss = ((source - margin) ** 2 * ((source > margin) & (target <= margin)).float()
                + (source - target) ** 2 * ((source > target) & (target > margin) & (target <= 0)).float()
                + (source - target) ** 2 * (target > 0).float())
        total = total + torch.abs(loss).mean(dim=0).sum() / 2 ** (n - i - 1)
    return total


def _randomise_bns(model: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = torch.randn(n, generator=g)
            m.bias.data = torch.randn(n, generator=g) * 1.5
            m.bias.data[: max(1, n // 8)] += 6.0  # some channels in the -3 s branch
            m.running_mean.data = torch.randn(n, generator=g) * 0.1
            m.running_var.data = torch.rand(n, generator=g) + 0.5


def _ctx(student, teacher, size=8, classes=10, labels=None):
    shape = (3, size, size)
    return BuildContext(probe(student, shape, CPU, True), probe(teacher, shape, CPU, True), classes,
                        labels if labels is not None else torch.zeros(4, dtype=torch.long),
                        student_model=student, teacher_model=teacher)


@pytest.mark.parametrize("t_name,s_name", [("resnet14", "resnet8"), ("vgg8", "resnet8"), ("wrn_16_2", "wrn_16_1")])
def test_ofd_value_and_gradient_match_the_official_code(t_name, s_name):
    torch.manual_seed(0)
    teacher, student = freeze(create_model(t_name, num_classes=10)), create_model(s_name, num_classes=10)
    _randomise_bns(teacher, 1)
    method = build_method("ofd", _ctx(student, teacher)).train()
    # the margins: the teacher's preact BNs through the reference rule
    bns = teacher.preact_bns()
    pairs = method.pairs
    margins = [torch.tensor([ref_margin(float(w), float(b)) for w, b in zip(bns[i_t - 1].weight, bns[i_t - 1].bias)])
               for _, i_t in pairs]
    for k, m in enumerate(margins):
        torch.testing.assert_close(getattr(method, f"margin{k}"), m, rtol=RTOL, atol=ATOL)

    g = torch.Generator().manual_seed(2)
    ps, pt = probe(student, (3, 8, 8), CPU, True), probe(teacher, (3, 8, 8), CPU, True)
    s_pre = [torch.randn(3, *f.shape[1:], generator=g).requires_grad_() for f in ps.preact_features]
    t_pre = [torch.randn(3, *f.shape[1:], generator=g) * 2 for f in pt.preact_features]
    s_out = ModelOutput(torch.zeros(3, 10), [], None, s_pre)
    t_out = ModelOutput(torch.zeros(3, 10), [], None, t_pre)
    ours = method.losses(s_out, t_out, None)["ofd"]
    ours.backward()
    grads_ours = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in s_pre]
    grads_ours += [p.grad.clone() for p in method.connectors.parameters()]

    for p in s_pre:
        p.grad = None
    convs = [c[0].weight.detach().clone().requires_grad_() for c in method.connectors]
    bn_params = [(c[1].weight.detach().clone().requires_grad_(), c[1].bias.detach().clone().requires_grad_())
                 for c in method.connectors]
    # the references align by taking the last min(n_s, n_t) stages of preact_feats[1:]
    n_s, n_t, n = len(s_pre) - 1, len(t_pre) - 1, len(pairs)
    assert n == min(n_s, n_t) and pairs == [(1 + n_s - n + i, 1 + n_t - n + i) for i in range(n)]
    ref = ref_ofd_clovaai(s_pre[1:], t_pre[1:], convs, bn_params, margins)
    torch.testing.assert_close(ours, ref, rtol=RTOL, atol=ATOL)
    ref.backward()
    grads_ref = [p.grad if p.grad is not None else torch.zeros_like(p) for p in s_pre]
    for w, (gm, bt) in zip(convs, bn_params):
        grads_ref += [w.grad, gm.grad, bt.grad]
    for a, b in zip(grads_ours, grads_ref):
        torch.testing.assert_close(a, b, rtol=RTOL, atol=ATOL)
    assert grads_ours[0].abs().sum() == 0  # the stem is not distilled
    # mdistiller's three-term form is the same number
    md = ref_ofd_mdistiller(s_pre[1:], t_pre[1:], convs, bn_params, margins)
    torch.testing.assert_close(ours.detach(), md.detach(), rtol=RTOL, atol=ATOL)


def test_ofd_connector_is_initialised_as_theirs():
    torch.manual_seed(0)
    teacher, student = freeze(create_model("resnet8x4", num_classes=10)), create_model("resnet8", num_classes=10)
    method = build_method("ofd", _ctx(student, teacher))
    for conv, bn in method.connectors:
        assert conv.bias is None and conv.kernel_size == (1, 1)
        std = math.sqrt(2.0 / conv.out_channels)  # N(0, sqrt(2 / (k * k * out_channels)))
        assert abs(conv.weight.std().item() - std) < 0.15 * std and abs(conv.weight.mean().item()) < 0.1 * std
        assert torch.equal(bn.weight, torch.ones_like(bn.weight)) and torch.equal(bn.bias, torch.zeros_like(bn.bias))
    assert [c[0].out_channels for c in method.connectors] == [64, 128, 256]
    assert method.loss_weights() == {"ofd": 0.001} and method.ce_weight() == 1.0


# --- the preact BN lookup on every cifar100 teacher architecture ---------------------------------
@pytest.mark.parametrize("name", TEACHERS + ["MobileNetV2"])
def test_preact_bns_are_the_bns_before_each_stage_relu(name):
    """Adding d to channel c of the declared BN's bias adds exactly d to channel c of that stage's
    pre-ReLU map (its output is the map, or is summed with a shortcut into it) and changes nothing else
    there; then the margin buffers of an ofd built on this teacher are the rule applied to those BNs."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=100)
    _randomise_bns(model, 3)
    model.eval()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        base = model.forward_kd(x, preact=True).preact_features
    bns = model.preact_bns()
    assert len(bns) == len(base) - 1
    for i, bn in enumerate(bns, start=1):
        assert isinstance(bn, nn.BatchNorm2d) and bn.num_features == base[i].shape[1]
        # deep random nets reach large activations: d on their scale, the tolerance relative to it
        c, d = bn.num_features // 2, max(1.0, base[i].abs().max().item())
        saved = bn.bias.data.clone()
        bn.bias.data[c] += d
        with torch.no_grad():
            moved = model.forward_kd(x, preact=True).preact_features[i]
        bn.bias.data = saved
        delta = moved - base[i]
        torch.testing.assert_close(delta[:, c], torch.full_like(delta[:, c], d), rtol=0, atol=1e-5 * d)
        delta[:, c] = 0
        assert delta.abs().max() < 1e-5 * d
    if name not in TEACHERS:
        return
    freeze(model)
    student = create_model("resnet8", num_classes=100)
    method = build_method("ofd", _ctx(student, model, size=32, classes=100))
    t_channels = [int(f.shape[1]) for f in probe(model, (3, 32, 32), CPU, True).preact_features]
    for k, (_, i_t) in enumerate(method.pairs):
        margin = getattr(method, f"margin{k}")
        bn = bns[i_t - 1]
        assert margin.shape == (t_channels[i_t],)
        want = torch.tensor([ref_margin(float(w), float(b)) for w, b in zip(bn.weight, bn.bias)])
        torch.testing.assert_close(margin, want, rtol=RTOL, atol=ATOL)
    assert not any(m is model for m in method.modules())


@pytest.mark.parametrize("name", ["ShuffleV1", "ShuffleV2", "oki2020_teacher"])
def test_ofd_refuses_a_teacher_without_preact_bns(name):
    torch.manual_seed(0)
    teacher = freeze(create_model(name, num_classes=10))
    with pytest.raises(PairNotSupported, match="ofd cannot use teacher"):  # "n/a" in the grid, never a crash
        build_method("ofd", _ctx(create_model("resnet8", num_classes=10), teacher, size=32))


def test_ofd_needs_the_teacher_model():
    torch.manual_seed(0)
    teacher, student = freeze(create_model("resnet8", num_classes=10)), create_model("resnet8", num_classes=10)
    ctx = _ctx(student, teacher)
    ctx.teacher_model = None
    with pytest.raises(ValueError, match="teacher model"):
        build_method("ofd", ctx)


@pytest.mark.parametrize("pair", PAIRS)
def test_ofd_builds_and_backpropagates_on_every_cifar100_pair(pair):
    t_name, s_name = parse_pair(pair)
    torch.manual_seed(0)
    teacher, student = freeze(create_model(t_name, num_classes=100)), create_model(s_name, num_classes=100)
    method = build_method("ofd", _ctx(student, teacher, size=16, classes=100))
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        t_out = teacher.forward_kd(x, preact=True)
    loss = method.losses(student.forward_kd(x, preact=True), t_out, None)["ofd"]
    loss.backward()
    assert torch.isfinite(loss)
    for p in method.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


# --- CAT-KD -----------------------------------------------------------------------------------------
def test_cat_kd_by_hand():
    a_s = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)
    w_s = torch.tensor([[1.0], [2.0]])                      # K = 2 classes, D = 1
    a_t = torch.tensor([[0.0, 0.0], [0.0, 4.0]]).view(1, 1, 2, 2)
    w_t = torch.tensor([[1.0], [1.0]])
    cam_s, cam_t = class_activation_maps(a_s, w_s), class_activation_maps(a_t, w_t)
    assert cam_s[0, 1].tolist() == [[2.0, 4.0], [6.0, 8.0]]
    # R = 1: pooled CAMs s = [2.5, 5], t = [1, 1]; MSE = (1.5^2 + 4^2) / 2
    assert cat_loss(cam_s, cam_t, 1, "none").item() == pytest.approx((1.5 ** 2 + 4 ** 2) / 2)
    # R = 2, l2: both student maps normalise to [1, 2, 3, 4] / sqrt(30), both teacher maps to [0, 0, 0, 1]
    r30 = math.sqrt(30)
    want = 2 * ((1 / r30) ** 2 + (2 / r30) ** 2 + (3 / r30) ** 2 + (4 / r30 - 1) ** 2) / 8
    assert cat_loss(cam_s, cam_t, 2, "l2").item() == pytest.approx(want, rel=1e-6)


def ref_cat(a_s, w_s, a_t, w_t, R, normalize):
    """Their CAT_loss, written out with loops: CAM = sum_d W[k, d] A[b, d], block means to R x R, optional
    L2 over the R*R cells of each (b, k), then the mean of the squared differences."""
    def cams(a, w):
        B, D, H, W = a.shape
        K = w.shape[0]
        out = [[sum(w[k, d] * a[b, d] for d in range(D)) for k in range(K)] for b in range(B)]
        pooled = []
        for b in range(B):
            row = []
            for k in range(K):
                hb, wb = H // R, W // R
                cells = torch.stack([out[b][k][i * hb:(i + 1) * hb, j * wb:(j + 1) * wb].sum() / (hb * wb)
                                     for i in range(R) for j in range(R)])
                if normalize:
                    cells = cells / torch.clamp(torch.sqrt((cells * cells).sum()), min=1e-12)
                row.append(cells)
            pooled.append(torch.stack(row))
        return torch.stack(pooled)
    ps, pt = cams(a_s, w_s), cams(a_t, w_t)
    return ((ps - pt) ** 2).sum() / ps.numel()


def _head_out(a: torch.Tensor, linear: nn.Linear) -> ModelOutput:
    emb = a.mean(dim=(2, 3))
    return ModelOutput(linear(emb), [a], emb, classifier=linear, embedding_map=a)


@pytest.mark.parametrize("R,norm,s_hw,t_hw", [(2, "none", 4, 4), (2, "l2", 4, 8), (4, "l2", 4, 8), (1, "none", 2, 4)])
def test_cat_kd_value_and_gradient_match_the_official_code(R, norm, s_hw, t_hw):
    g = torch.Generator().manual_seed(0)
    K, D_s, D_t, B = 4, 3, 5, 2
    s_lin, t_lin = nn.Linear(D_s, K), nn.Linear(D_t, K)
    a_s = torch.randn(B, D_s, s_hw, s_hw, generator=g).requires_grad_()
    a_t = torch.randn(B, D_t, t_hw, t_hw, generator=g).requires_grad_()  # must get no gradient
    s_out, t_out = _head_out(a_s, s_lin), _head_out(a_t, t_lin)
    method = build_method("cat_kd", BuildContext(s_out, t_out, K, torch.zeros(4, dtype=torch.long)),
                          {"cat_kd": {"cam_resolution": R, "cam_norm": norm}})
    ours = method.losses(s_out, t_out, None)["cat_kd"]
    ours.backward()
    assert a_t.grad is None and t_lin.weight.grad is None and t_lin.bias.grad is None  # the teacher is frozen
    assert s_lin.bias.grad is None  # the CAM has no bias (their conv_test)
    got = (a_s.grad.clone(), s_lin.weight.grad.clone())

    a_s2 = a_s.detach().clone().requires_grad_()
    w_s2 = s_lin.weight.detach().clone().requires_grad_()
    ref = ref_cat(a_s2, w_s2, a_t.detach(), t_lin.weight.detach(), R, norm == "l2")
    torch.testing.assert_close(ours, ref, rtol=RTOL, atol=ATOL)
    ref.backward()
    torch.testing.assert_close(got[0], a_s2.grad, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(got[1], w_s2.grad, rtol=RTOL, atol=ATOL)


def test_cat_kd_reads_the_students_current_classifier():
    g = torch.Generator().manual_seed(1)
    s_lin, t_lin = nn.Linear(3, 4), nn.Linear(5, 4)
    a_s, a_t = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 5, 4, 4, generator=g)
    method = build_method("cat_kd", BuildContext(_head_out(a_s, s_lin), _head_out(a_t, t_lin), 4,
                                                 torch.zeros(4, dtype=torch.long)))
    before = method.losses(_head_out(a_s, s_lin), _head_out(a_t, t_lin), None)["cat_kd"].item()
    with torch.no_grad():
        # an optimizer step on the student's classifier (not a uniform scaling: the CAMs are l2-normalised)
        s_lin.weight.add_(torch.randn(s_lin.weight.shape, generator=g))
    after = method.losses(_head_out(a_s, s_lin), _head_out(a_t, t_lin), None)["cat_kd"].item()
    assert after != before
    assert after == pytest.approx(ref_cat(a_s, s_lin.weight.detach(), a_t, t_lin.weight.detach(), 2, True).item(),
                                  rel=1e-5)
    assert not any(isinstance(m, nn.Linear) for m in method.modules())  # no copy of either head


def test_cat_kd_refuses_models_without_a_linear_head_or_a_map():
    a = torch.randn(2, 3, 4, 4)
    good = _head_out(a, nn.Linear(3, 4))

    def ctx(s, t):
        return BuildContext(s, t, 4, torch.zeros(4, dtype=torch.long))

    with pytest.raises(ValueError, match="nn.Linear classifier"):
        build_method("cat_kd", ctx(ModelOutput(good.logits, [a], good.embedding, embedding_map=a), good))
    with pytest.raises(ValueError, match="before global pooling"):
        build_method("cat_kd", ctx(good, ModelOutput(good.logits, [a], good.embedding, classifier=nn.Linear(3, 4))))
    with pytest.raises(ValueError, match="same classes"):
        build_method("cat_kd", ctx(good, _head_out(a, nn.Linear(3, 5))))


def test_cat_kd_defaults_and_per_pair_values():
    assert method_defaults("cat_kd")["cat_kd"] == {"gamma": 1.0, "beta": 400.0, "cam_resolution": 2, "cam_norm": "l2"}
    cfg = load_preset("cifar100")
    assert method_overrides(cfg, "resnet32x4:resnet8x4")["cat_kd"] == {"beta": 15.0, "cam_resolution": 2,
                                                                       "cam_norm": "none"}
    assert method_overrides(cfg, "resnet32x4:ShuffleV1")["cat_kd"] == {"beta": 600.0, "cam_resolution": 4,
                                                                       "cam_norm": "l2"}
    assert "cat_kd" not in method_overrides(cfg, "ResNet50:vgg8")


# --- the contract fields these methods read, on every cifar100 model ------------------------------
@pytest.mark.parametrize("name", MODELS)
def test_models_expose_their_classifier_and_embedding_map(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=100).eval()
    with torch.no_grad():
        out = model.forward_kd(torch.randn(2, 3, 32, 32), preact=True)
    assert isinstance(out.classifier, nn.Linear)
    assert any(out.classifier is m for m in model.modules())  # the model's own layer, not a copy
    torch.testing.assert_close(out.classifier(out.embedding), out.logits, rtol=RTOL, atol=ATOL)
    assert out.embedding_map.dim() == 4
    torch.testing.assert_close(F.adaptive_avg_pool2d(out.embedding_map, 1).flatten(1), out.embedding,
                               rtol=RTOL, atol=ATOL)
    lo = out.logits_only()
    assert lo.classifier is out.classifier and lo.embedding_map is None and lo.features == []


# --- cohort = solo ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    return digits_slice()


@pytest.fixture(scope="module")
def teacher():
    return random_teacher()


@pytest.mark.parametrize("method", ["ofd", "cat_kd"])
def test_trains_in_a_cohort_bitwise_equal_to_solo(digits, teacher, method):
    before = copy.deepcopy(teacher.state_dict())
    names = [method, "kd", "vanilla"]
    cohort = train([make_run(m, digits, teacher) for m in names], digits, teacher)
    assert all(r.error is None for r in cohort)
    for m, in_cohort in zip(names, cohort):
        solo = train([make_run(m, digits, teacher)], digits, teacher)[0]
        assert_bitwise_equal(in_cohort, solo)
    assert cohort[0].history[-1]["losses"][method] > 0
    for k, v in teacher.state_dict().items():  # read, never changed
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("t_name,s_name", [("oki2020_teacher", "oki2020_student"), ("resnet14", "oki2020_student")])
def test_cat_kd_is_not_applicable_to_a_flatten_and_mlp_head(t_name, s_name):
    """The seed paper's networks flatten their last map into an MLP: no class activation map, so "n/a"."""
    torch.manual_seed(0)
    teacher, student = freeze(create_model(t_name, num_classes=10)), create_model(s_name, num_classes=10)
    with pytest.raises(PairNotSupported, match="cat_kd needs the (teacher|student)'s"):
        build_method("cat_kd", _ctx(student, teacher, size=28))
