"""Golden-value tests of the RepDistiller ports sp, cc, vid, pkt, nst.

Each method's loss value and its gradient w.r.t. the student's inputs (feature
maps / embedding; for cc and vid also w.r.t. the method's own parameters) are
compared, in float32 to 1e-5 relative, with an independent transcription of
the RepDistiller (HobbitLong/RepDistiller) formula written here with different
primitives (loops, einsum, block means, log(1 + exp)), plus one tiny
hand-computed case per method with the numbers written out.
"""
from __future__ import annotations

import math

import pytest
import torch

from kdcore import ModelOutput
from methods import (Batch, BuildContext, HyperparameterError, batch_coupling, build_method, method_class,
                     validate_method)

RTOL = 1e-5
ATOL = 1e-7
DT = torch.float32
NEW = ("sp", "cc", "vid", "pkt", "nst")


def close(actual, expected, atol=ATOL):
    torch.testing.assert_close(actual, expected.to(actual.dtype), rtol=RTOL, atol=atol)


def close_grad(actual, expected):
    """rtol 1e-5 per element, with an absolute floor of 1e-6 of the gradient's largest entry: in float32 an
    entry that is a cancellation of terms of that size carries rounding of that order."""
    close(actual, expected, atol=1e-6 * float(expected.abs().max()))


def randn(*shape, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(*shape, generator=g, dtype=DT)


def rand(*shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=g, dtype=DT)


def output(features=(), embedding=None, batch=None) -> ModelOutput:
    b = batch or (features[0].shape[0] if features else embedding.shape[0])
    emb = embedding if embedding is not None else torch.zeros(b, 1, dtype=DT)
    return ModelOutput(torch.zeros(b, 10, dtype=DT), list(features), emb)


def maps(b, channels, sizes, seed, grad=False):
    """A feature list [stem, stage 1, ...]: non-negative (post-ReLU-like) maps, square."""
    out = []
    for k, (c, s) in enumerate(zip(channels, sizes)):
        f = rand(b, c, s, s, seed=seed * 100 + k)
        out.append(f.requires_grad_(grad) if k > 0 else f)
    return out


def ctx_for(student: ModelOutput, teacher: ModelOutput) -> BuildContext:
    return BuildContext(student=student, teacher=teacher, num_classes=10, train_labels=torch.zeros(10, dtype=torch.long))


def batch_of(b: int) -> Batch:
    return Batch(torch.zeros(b, 3, 32, 32), torch.zeros(b, dtype=torch.long), torch.arange(b))


def ref_block_pool(f, h):
    """adaptive_avg_pool2d to (h, h) for an exact divisor: mean of k x k blocks."""
    B, C, H, W = f.shape
    k = H // h
    return f.reshape(B, C, h, k, h, k).mean(dim=(3, 5))


def ref_pool_pair(fs, ft):
    if fs.shape[2] > ft.shape[2]:
        fs = ref_block_pool(fs, ft.shape[2])
    elif fs.shape[2] < ft.shape[2]:
        ft = ref_block_pool(ft, fs.shape[2])
    return fs, ft


# (student sizes, teacher sizes) of features[0..L]: same size, teacher pooled, student pooled
SIZES = [
    ([32, 32, 16, 8], [32, 32, 16, 8]),  # resnet32x4 -> resnet8x4
    ([16, 16, 8, 4, 2], [32, 32, 16, 8, 4]),  # ResNet50 -> MobileNetV2: teacher maps pooled
    ([32, 32, 16, 8, 4], [16, 16, 8, 4, 2]),  # student larger: student maps pooled
]


# --------------------------------------------------------------------------- declarations
def test_declarations_defaults_and_weights():
    s_out = output(maps(2, [3, 4, 5], [8, 8, 4], seed=1), randn(2, 6, seed=2))
    t_out = output(maps(2, [3, 7, 9], [8, 8, 4], seed=3), randn(2, 11, seed=4))
    ctx = ctx_for(s_out, t_out)
    expect = {
        # scripts/run_cifar_distill.sh rows (-r defaults to 1 in train_student.py, -a 0) and train_student.py
        "sp": ({"gamma": 1.0, "beta": 3000.0}, {"sp": 3000.0}),
        "cc": ({"gamma": 1.0, "beta": 0.02, "feat_dim": 128}, {"cc": 0.02}),
        "vid": ({"gamma": 1.0, "beta": 1.0, "init_pred_var": 5.0, "eps": 1e-5, "stage_align": "first"},
                {"vid": 1.0}),
        "pkt": ({"gamma": 1.0, "beta": 30000.0}, {"pkt": 30000.0}),
        "nst": ({"gamma": 1.0, "beta": 50.0, "stage_align": "first"}, {"nst": 50.0}),
    }
    for name, (hp, weights) in expect.items():
        cls = method_class(name)
        assert cls.needs_features and cls.needs_teacher and not cls.needs_preact, name
        m = build_method(name, ctx)
        assert m.hparams == hp and m.loss_weights() == weights and m.ce_weight() == 1.0, name
        with pytest.raises(HyperparameterError):
            build_method(name, ctx, {name: {"no_such_key": 1.0}})
    # SP, CC and PKT relate the samples of a batch; VID and NST are per-sample means
    assert {n: method_class(n).couples_batch for n in NEW} == {
        "sp": True, "cc": True, "vid": False, "pkt": True, "nst": False}
    assert batch_coupling("sp").startswith("sp: its B x B Gram matrix")
    assert batch_coupling("vid") is None and batch_coupling("nst+vid") is None
    # only cc and vid own parameters (they join the student's optimizer)
    assert [n for n in NEW if build_method(n, ctx).extra_parameters() > 0] == ["cc", "vid"]


def test_bad_values_raise():
    for name, kv in [("vid", {"init_pred_var": 1e-6}), ("vid", {"stage_align": "middle"}),
                     ("nst", {"stage_align": "middle"}), ("cc", {"feat_dim": 0}), ("pkt", {"beta": -1.0})]:
        with pytest.raises(HyperparameterError):
            validate_method(name, {name: kv})
    with pytest.raises(HyperparameterError, match="init_pred_var must be > vid.eps"):
        validate_method("vid", {"vid": {"init_pred_var": 0.5, "eps": 0.5}})


# --------------------------------------------------------------------------- sp
# Reference: RepDistiller distiller_zoo/SP.py Similarity.similarity_loss on [feat[-2]] (helper/loops.py
# `--distill similarity`): G = f f^T of the flattened maps, F.normalize(G) (rows, eps 1e-12),
# sum((G_t - G_s)^2) / bsz^2.

def ref_sp(fs, ft):
    B = fs.shape[0]

    def q(f):
        flat = f.reshape(B, -1)
        gram = torch.einsum("ik,jk->ij", flat, flat)
        rows = []
        for i in range(B):
            n = torch.sqrt(sum(gram[i, j] * gram[i, j] for j in range(B)))
            rows.append(gram[i] / torch.clamp(n, min=1e-12))
        return torch.stack(rows)

    d = q(ft) - q(fs)
    return sum(d[i, j] ** 2 for i in range(B) for j in range(B)) / (B * B)


@pytest.mark.parametrize("B,s_shape,t_shape", [(6, (8, 4, 4), (16, 4, 4)), (5, (160, 2, 2), (2048, 4, 4)),
                                               (4, (64, 8, 8), (32, 8, 8))])
def test_sp_golden(B, s_shape, t_shape):
    fs = randn(B, *s_shape, seed=1).requires_grad_(True)
    ft = rand(B, *t_shape, seed=2)
    s_out, t_out = output([fs[:, :1], fs]), output([ft[:, :1], ft])
    m = build_method("sp", ctx_for(s_out, t_out))
    got = m.losses(s_out, t_out, batch_of(B))["sp"]
    (g_got,) = torch.autograd.grad(got, fs)
    x = fs.detach().clone().requires_grad_(True)
    want = ref_sp(x, ft)
    (g_want,) = torch.autograd.grad(want, x)
    close(got, want)
    close_grad(g_got, g_want)


def test_sp_uses_the_last_stage_only():
    fs = maps(3, [2, 3, 4], [4, 4, 2], seed=5, grad=True)
    ft = maps(3, [2, 5, 6], [4, 4, 2], seed=6)
    s_out, t_out = output(fs), output(ft)
    got = build_method("sp", ctx_for(s_out, t_out)).losses(s_out, t_out, batch_of(3))["sp"]
    got.backward()
    assert fs[1].grad is None and fs[2].grad is not None
    close(got, ref_sp(fs[2].detach(), ft[2]))


def test_sp_hand_computed():
    # B = 2, one number per sample. student [1, 2]: G = [[1, 2], [2, 4]], both rows -> [1, 2] / sqrt(5);
    # teacher [1, -1]: G = [[1, -1], [-1, 1]], rows [1, -1] / sqrt(2) and [-1, 1] / sqrt(2).
    # ||r_t - r_s||^2 = 2 - 2 r_t.r_s: row 0: 2 + 2 / sqrt(10), row 1: 2 - 2 / sqrt(10); sum 4; / B^2 = 1.
    fs = torch.tensor([1.0, 2.0]).view(2, 1, 1, 1)
    ft = torch.tensor([1.0, -1.0]).view(2, 1, 1, 1)
    s_out, t_out = output([fs, fs]), output([ft, ft])
    got = build_method("sp", ctx_for(s_out, t_out)).losses(s_out, t_out, batch_of(2))["sp"]
    close(got, torch.tensor(1.0))


# --------------------------------------------------------------------------- cc
# Reference: RepDistiller distiller_zoo/CC.py Correlation.forward on LinearEmbed(feat[-1]) of both models
# (train_student.py `--distill correlation`, embed_s / embed_t trainable; models/util.py LinearEmbed):
# delta = |f_s - f_t|, mean over i of sum_d delta[i, d] * delta[i + 1, d].

def ref_cc(es, et, ws, bs, wt, bt):
    zs = torch.einsum("bd,od->bo", es, ws) + bs
    zt = torch.einsum("bd,od->bo", et, wt) + bt
    diff = zs - zt
    delta = torch.where(diff >= 0, diff, -diff)
    B = es.shape[0]
    return sum(torch.dot(delta[i], delta[i + 1]) for i in range(B - 1)) / (B - 1)


@pytest.mark.parametrize("B,Ds,Dt,feat_dim", [(6, 64, 256, 128), (4, 1280, 2048, 16), (5, 7, 3, 9)])
def test_cc_golden(B, Ds, Dt, feat_dim):
    es = randn(B, Ds, seed=B).requires_grad_(True)
    et = rand(B, Dt, seed=B + 1)
    s_out, t_out = output([], es), output([], et)
    m = build_method("cc", ctx_for(s_out, t_out), {"cc": {"feat_dim": feat_dim}})
    assert m.embed_s.weight.shape == (feat_dim, Ds) and m.embed_t.weight.shape == (feat_dim, Dt)
    params = [m.embed_s.weight, m.embed_s.bias, m.embed_t.weight, m.embed_t.bias]
    got = m.losses(s_out, t_out, batch_of(B))["cc"]
    g_got = torch.autograd.grad(got, [es] + params)

    x = es.detach().clone().requires_grad_(True)
    ps = [p.detach().clone().requires_grad_(True) for p in params]
    want = ref_cc(x, et, *ps)
    g_want = torch.autograd.grad(want, [x] + ps)
    close(got, want)
    for a, b in zip(g_got, g_want):
        close_grad(a, b)
    # the teacher-side projection trains too (RepDistiller: trainable_list.append(embed_t))
    assert g_got[3].abs().sum() > 0


def test_cc_hand_computed():
    # identity projections, zero bias: z = e. student [[1, 2], [3, 0], [0, 1]], teacher [[0, 0], [1, 1], [2, -1]]
    # delta = [[1, 2], [2, 1], [2, 2]]; delta0.delta1 = 2 + 2 = 4, delta1.delta2 = 4 + 2 = 6; mean = 5
    es = torch.tensor([[1.0, 2.0], [3.0, 0.0], [0.0, 1.0]])
    et = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, -1.0]])
    s_out, t_out = output([], es), output([], et)
    m = build_method("cc", ctx_for(s_out, t_out), {"cc": {"feat_dim": 2}})
    with torch.no_grad():
        for lin in (m.embed_s, m.embed_t):
            lin.weight.copy_(torch.eye(2))
            lin.bias.zero_()
    close(m.losses(s_out, t_out, batch_of(3))["cc"], torch.tensor(5.0))
    # a batch of one: no consecutive pair (RepDistiller: NaN), 0 here
    one = m.losses(output([], es[:1]), output([], et[:1]), batch_of(1))["cc"]
    assert one.item() == 0.0


# --------------------------------------------------------------------------- vid
# Reference: RepDistiller distiller_zoo/VID.py VIDLoss (regressor conv1x1 -> ReLU -> conv1x1 -> ReLU -> conv1x1,
# bias-free; pred_var = log(1 + exp(log_scale)) + eps; mean of 0.5 ((mu - t)^2 / var + log var)), one VIDLoss(s, t, t)
# per zip(feat_s[1:-1], feat_t[1:-1]) pair, summed (train_student.py / helper/loops.py `--distill vid`).

def ref_vid_layer(fs, ft, w1, w2, w3, log_scale, eps=1e-5):
    fs, ft = ref_pool_pair(fs, ft)
    h = torch.einsum("oi,bihw->bohw", w1[:, :, 0, 0], fs).clamp(min=0)
    h = torch.einsum("oi,bihw->bohw", w2[:, :, 0, 0], h).clamp(min=0)
    mu = torch.einsum("oi,bihw->bohw", w3[:, :, 0, 0], h)
    var = torch.log(1.0 + torch.exp(log_scale)) + eps
    total = 0.0
    for c in range(mu.shape[1]):
        total = total + (0.5 * ((mu[:, c] - ft[:, c]) ** 2 / var[c] + torch.log(var[c]))).sum()
    return total / mu.numel()


def _vid_params(layer):
    r = layer.regressor
    return [r[0].weight, r[2].weight, r[4].weight, layer.log_scale]


@pytest.mark.parametrize("s_sizes,t_sizes", SIZES)
def test_vid_golden(s_sizes, t_sizes):
    B, n = 3, len(s_sizes)
    fs = maps(B, [4, 3, 5, 6, 2][:n], s_sizes, seed=7, grad=True)
    ft = maps(B, [4, 6, 4, 8, 5][:n], t_sizes, seed=8)
    s_out, t_out = output(fs), output(ft)
    m = build_method("vid", ctx_for(s_out, t_out))
    assert m.pairs == [(k, k) for k in range(1, n)]
    # sized from the probe: VIDLoss(s_channels, t_channels, t_channels)
    for (i_s, i_t), layer in zip(m.pairs, m.layers):
        cs, ct = fs[i_s].shape[1], ft[i_t].shape[1]
        assert [tuple(p.shape) for p in _vid_params(layer)] == [(ct, cs, 1, 1), (ct, ct, 1, 1), (ct, ct, 1, 1), (ct,)]
    with torch.no_grad():  # move log_scale off its constant init, so each channel's variance differs
        for layer in m.layers:
            layer.log_scale.add_(torch.linspace(-1.0, 1.0, layer.log_scale.numel()))
    params = [p for layer in m.layers for p in _vid_params(layer)]
    got = m.losses(s_out, t_out, batch_of(B))["vid"]
    g_got = torch.autograd.grad(got, fs[1:] + params)

    xs = [f.detach().clone().requires_grad_(True) for f in fs[1:]]
    ps = [p.detach().clone().requires_grad_(True) for p in params]
    want = sum(ref_vid_layer(xs[k], ft[k + 1], *ps[4 * k: 4 * k + 4]) for k in range(n - 1))
    g_want = torch.autograd.grad(want, xs + ps)
    close(got, want)
    for a, b in zip(g_got, g_want):
        close_grad(a, b)


def test_vid_initial_variance_and_stage_mismatch():
    # student 4 stages (vgg-like), teacher 3 (resnet-like); RepDistiller's zip pairs the first three
    fs = maps(2, [3, 4, 5, 6, 7], [32, 16, 8, 4, 4], seed=9, grad=True)
    ft = maps(2, [3, 8, 9, 10], [32, 32, 16, 8], seed=10)
    s_out, t_out = output(fs), output(ft)
    first = build_method("vid", ctx_for(s_out, t_out))
    last = build_method("vid", ctx_for(s_out, t_out), {"vid": {"stage_align": "last"}})
    assert first.pairs == [(1, 1), (2, 2), (3, 3)] and last.pairs == [(2, 1), (3, 2), (4, 3)]
    assert [layer.regressor[0].in_channels for layer in last.layers] == [5, 6, 7]
    for layer in first.layers:  # log_scale = log(exp(5 - 1e-5) - 1): the variance starts at init_pred_var
        close(layer.log_scale.detach(), torch.full_like(layer.log_scale, math.log(math.exp(5.0 - 1e-5) - 1.0)))
        close(layer.variance().detach(), torch.full_like(layer.log_scale, 5.0))
    out = first.losses(s_out, t_out, batch_of(2))["vid"]
    out.backward()
    assert fs[4].grad is None and all(fs[k].grad is not None for k in (1, 2, 3))


def test_vid_hand_computed():
    # one channel, 1x1 maps, batch 2, all three conv weights 1: mu = relu(relu(s)) = s = [1, 3]; teacher [2, 2];
    # var = 5 (init). vid = mean of 0.5 ((mu - t)^2 / 5 + ln 5) = 0.5 (1 / 5 + ln 5) = 0.1 + 0.5 ln 5 = 0.90471895621705
    # d vid / d log_scale = 0.5 (1 / var - mean (mu - t)^2 / var^2) * sigmoid(log_scale)
    #                     = 0.5 (1 / 5 - 1 / 25) * (1 - exp(-(5 - 1e-5))) = 0.08 * 0.99326198... = 0.0794609588
    fs = torch.tensor([1.0, 3.0]).view(2, 1, 1, 1)
    ft = torch.tensor([2.0, 2.0]).view(2, 1, 1, 1)
    s_out, t_out = output([fs, fs]), output([ft, ft])
    m = build_method("vid", ctx_for(s_out, t_out))
    with torch.no_grad():
        for p in _vid_params(m.layers[0])[:3]:
            p.fill_(1.0)
    got = m.losses(s_out, t_out, batch_of(2))["vid"]
    close(got, torch.tensor(0.9047189562170501))
    (g,) = torch.autograd.grad(got, m.layers[0].log_scale)
    close(g, torch.tensor([0.07946095884968861]))


# --------------------------------------------------------------------------- pkt
# Reference: RepDistiller distiller_zoo/PKT.py PKT.cosine_similarity_loss (eps 1e-7) on feat[-1]
# (helper/loops.py `--distill pkt`): x / (||x|| + eps), NaN -> 0, (cos + 1) / 2, row-normalised,
# mean of P_t log((P_t + eps) / (P_s + eps)).

def ref_pkt(es, et, eps=1e-7):
    def dist(e):
        B = e.shape[0]
        units = [e[i] / (torch.linalg.vector_norm(e[i]) + eps) for i in range(B)]
        k = [[(torch.dot(units[i], units[j]) + 1.0) / 2.0 for j in range(B)] for i in range(B)]
        return [[k[i][j] / sum(k[i]) for j in range(B)] for i in range(B)]

    ps, pt = dist(es), dist(et)
    B = es.shape[0]
    total = sum(pt[i][j] * (torch.log(pt[i][j] + eps) - torch.log(ps[i][j] + eps)) for i in range(B) for j in range(B))
    return total / (B * B)


@pytest.mark.parametrize("B,Ds,Dt", [(6, 64, 256), (5, 1280, 2048), (4, 3, 5)])
def test_pkt_golden(B, Ds, Dt):
    es = randn(B, Ds, seed=B * 7).requires_grad_(True)
    et = rand(B, Dt, seed=B * 7 + 1)
    s_out, t_out = output([], es), output([], et)
    m = build_method("pkt", ctx_for(s_out, t_out))
    got = m.losses(s_out, t_out, batch_of(B))["pkt"]
    (g_got,) = torch.autograd.grad(got, es)
    x = es.detach().clone().requires_grad_(True)
    want = ref_pkt(x, et)
    (g_want,) = torch.autograd.grad(want, x)
    close(got, want)
    close_grad(g_got, g_want)


def test_pkt_hand_computed():
    # student [[1, 0], [0, 1]]: cosines [[1, 0], [0, 1]] -> K = [[1, .5], [.5, 1]] -> P_s = [[2/3, 1/3], [1/3, 2/3]];
    # teacher [[1, 0], [1, 0]]: cosines all 1 -> P_t = 1/2 everywhere.
    # pkt = (2 * .5 ln(.5 / (2/3)) + 2 * .5 ln(.5 / (1/3))) / 4 = ln(1.125) / 4 = 0.02944575891...
    # with RepDistiller's eps = 1e-7 (norm + eps, P + eps): 0.029445738080771604
    es = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    et = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    s_out, t_out = output([], es), output([], et)
    got = build_method("pkt", ctx_for(s_out, t_out)).losses(s_out, t_out, batch_of(2))["pkt"]
    close(got, torch.tensor(0.029445738080771604))
    close(got, torch.tensor(math.log(1.125) / 4))
    # an all-zero embedding row: its unit vector is 0 (norm + eps > 0), no NaN
    z = torch.zeros(2, 2).requires_grad_(True)
    got0 = build_method("pkt", ctx_for(s_out, t_out)).losses(output([], z), t_out, batch_of(2))["pkt"]
    got0.backward()
    assert torch.isfinite(got0) and torch.isfinite(z.grad).all()


# --------------------------------------------------------------------------- nst
# Reference: RepDistiller distiller_zoo/NST.py NSTLoss.nst_loss (full_loss=True) on zip(feat_s[1:-1], feat_t[1:-1]),
# summed (helper/loops.py `--distill nst`): pool the larger map, F.normalize over H*W per channel,
# poly_kernel(a, b) = ((a b^T))^2 per sample; mean k(t, t) + mean k(s, s) - 2 mean k(s, t).

def ref_nst_layer(fs, ft):
    fs, ft = ref_pool_pair(fs, ft)

    def unit(f):
        f = f.reshape(f.shape[0], f.shape[1], -1)
        n = torch.sqrt((f * f).sum(dim=2, keepdim=True))
        return f / torch.clamp(n, min=1e-12)

    def kmean(a, b):
        return torch.einsum("bin,bjn->bij", a, b).pow(2).sum() / (a.shape[0] * a.shape[1] * b.shape[1])

    s, t = unit(fs), unit(ft)
    return kmean(t, t) + kmean(s, s) - 2 * kmean(s, t)


@pytest.mark.parametrize("s_sizes,t_sizes", SIZES)
def test_nst_golden(s_sizes, t_sizes):
    B, n = 3, len(s_sizes)
    fs = maps(B, [4, 3, 5, 6, 2][:n], s_sizes, seed=11, grad=True)
    ft = maps(B, [4, 6, 4, 8, 5][:n], t_sizes, seed=12)
    s_out, t_out = output(fs), output(ft)
    m = build_method("nst", ctx_for(s_out, t_out))
    got = m.losses(s_out, t_out, batch_of(B))["nst"]
    g_got = torch.autograd.grad(got, fs[1:])
    xs = [f.detach().clone().requires_grad_(True) for f in fs[1:]]
    want = sum(ref_nst_layer(xs[k], ft[k + 1]) for k in range(n - 1))
    g_want = torch.autograd.grad(want, xs)
    close(got, want)
    for a, b in zip(g_got, g_want):
        close_grad(a, b)


def test_nst_stage_mismatch():
    fs = maps(2, [3, 4, 5, 6, 7], [32, 16, 8, 4, 4], seed=13)
    ft = maps(2, [3, 8, 9, 10], [32, 32, 16, 8], seed=14)
    s_out, t_out = output(fs), output(ft)
    first = build_method("nst", ctx_for(s_out, t_out))
    last = build_method("nst", ctx_for(s_out, t_out), {"nst": {"stage_align": "last"}})
    close(first.losses(s_out, t_out, batch_of(2))["nst"], sum(ref_nst_layer(fs[k], ft[k]) for k in (1, 2, 3)))
    close(last.losses(s_out, t_out, batch_of(2))["nst"], sum(ref_nst_layer(fs[k + 1], ft[k]) for k in (1, 2, 3)))


def test_nst_hand_computed():
    # one sample, 1 x 2 maps. student one channel [3, 4] -> [0.6, 0.8]; teacher two channels [1, 0], [0, 1].
    # k(t, t) = [[1, 0], [0, 1]] -> mean 0.5; k(s, s) = [[1]] -> 1; k(s, t) = [0.36, 0.64] -> mean 0.5.
    # nst = 0.5 + 1 - 2 * 0.5 = 0.5
    fs = torch.tensor([3.0, 4.0]).view(1, 1, 1, 2)
    ft = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(1, 2, 1, 2)
    s_out, t_out = output([fs, fs]), output([ft, ft])
    got = build_method("nst", ctx_for(s_out, t_out)).losses(s_out, t_out, batch_of(1))["nst"]
    close(got, torch.tensor(0.5))
