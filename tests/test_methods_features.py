"""Golden-value tests of the feature-based methods fitnet, at, rkd.

Each method's loss value and its gradient w.r.t. the student's inputs (feature
maps / embedding) are compared with an independent transcription of the
RepDistiller (HobbitLong/RepDistiller) formula written here with different
primitives (loops, einsum, unfold, torch.cdist, block means), to 1e-5
relative, plus tiny hand-computed cases with the numbers written out.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import methods.at  # noqa: F401  (registers "at")
import methods.fitnet  # noqa: F401  (registers "fitnet")
import methods.rkd  # noqa: F401  (registers "rkd")
from kdcore.models.registry import ModelOutput
from methods.at import paired_stages
from methods.base import Batch, BuildContext, HyperparameterError, build_method, method_class

RTOL = 1e-5
ATOL = 1e-9

# RepDistiller is_feat shapes at 32x32 input: (channels, size) of feat[0..-2], and the
# embedding width (feat[-1]); read off models/*.py of HobbitLong/RepDistiller.
ARCH = {
    "resnet8x4": ([(32, 32), (64, 32), (128, 16), (256, 8)], 256),
    "resnet32x4": ([(32, 32), (64, 32), (128, 16), (256, 8)], 256),
    "resnet20": ([(16, 32), (16, 32), (32, 16), (64, 8)], 64),
    "wrn_40_2": ([(16, 32), (32, 32), (64, 16), (128, 8)], 128),
    "vgg13": ([(64, 32), (128, 16), (256, 8), (512, 4), (512, 4)], 512),
    "vgg8": ([(64, 32), (128, 16), (256, 8), (512, 4), (512, 4)], 512),
    "ResNet50": ([(64, 32), (256, 32), (512, 16), (1024, 8), (2048, 4)], 2048),
    "MobileNetV2": ([(16, 16), (12, 16), (16, 8), (48, 4), (160, 2)], 1280),
    "ShuffleV1": ([(24, 32), (240, 16), (480, 8), (960, 4)], 960),
    "ShuffleV2": ([(24, 32), (116, 16), (232, 8), (464, 4)], 1024),
}

# RepDistiller's CIFAR-100 teacher -> student pairs (CRD paper tables)
PAIRS = [
    ("wrn_40_2", "wrn_40_2"),
    ("resnet32x4", "resnet8x4"),
    ("vgg13", "vgg8"),
    ("vgg13", "MobileNetV2"),
    ("ResNet50", "MobileNetV2"),
    ("ResNet50", "vgg8"),
    ("resnet32x4", "ShuffleV1"),
    ("resnet32x4", "ShuffleV2"),
    ("wrn_40_2", "ShuffleV1"),
    ("vgg13", "resnet20"),  # not a RepDistiller pair: student map 2x larger at hint_layer 2
]


def fake_output(arch: str, batch: int = 2, seed: int = 0, dtype=torch.float32, grad=False) -> ModelOutput:
    g = torch.Generator().manual_seed(seed)
    maps, dim = ARCH[arch]
    feats = [torch.rand(batch, c, s, s, generator=g, dtype=dtype).requires_grad_(grad) for c, s in maps]
    emb = torch.randn(batch, dim, generator=g, dtype=dtype).requires_grad_(grad)
    return ModelOutput(torch.randn(batch, 100, generator=g, dtype=dtype), feats, emb)


def output_from(features, embedding=None) -> ModelOutput:
    b = features[0].shape[0] if features else embedding.shape[0]
    emb = embedding if embedding is not None else torch.zeros(b, 1, dtype=torch.float64)
    return ModelOutput(torch.zeros(b, 10, dtype=emb.dtype), list(features), emb)


def ctx_for(student: ModelOutput, teacher: ModelOutput) -> BuildContext:
    return BuildContext(student=student, teacher=teacher, num_classes=100, train_labels=torch.zeros(10, dtype=torch.long))


def dummy_batch(b: int = 2) -> Batch:
    return Batch(torch.zeros(b, 3, 32, 32), torch.zeros(b, dtype=torch.long), torch.arange(b))


def close(actual, expected):
    torch.testing.assert_close(actual, expected, rtol=RTOL, atol=ATOL)


# --------------------------------------------------------------------------- common
@pytest.mark.parametrize("name", ["fitnet", "at", "rkd"])
def test_declarations_and_unknown_key(name):
    cls = method_class(name)
    assert cls.needs_features and cls.needs_teacher
    ctx = ctx_for(fake_output("resnet8x4"), fake_output("resnet32x4", seed=1))
    with pytest.raises(HyperparameterError):
        build_method(name, ctx, {name: {"no_such_key": 1.0}})


def test_defaults_and_weights():
    ctx = ctx_for(fake_output("resnet8x4"), fake_output("resnet32x4", seed=1))
    fit = build_method("fitnet", ctx)
    assert fit.hparams == {"gamma": 1.0, "beta": 100.0, "hint_layer": 2}
    assert fit.loss_weights() == {"fitnet_hint": 100.0} and fit.ce_weight() == 1.0
    at = build_method("at", ctx)
    assert at.hparams == {"gamma": 1.0, "beta": 1000.0, "p": 2.0, "stage_align": "first"}
    assert at.loss_weights() == {"at": 1000.0} and at.ce_weight() == 1.0
    rkd = build_method("rkd", ctx, {"rkd": {"beta": 2.0}})
    assert rkd.hparams == {"gamma": 1.0, "beta": 2.0, "distance_weight": 25.0, "angle_weight": 50.0}
    assert rkd.loss_weights() == {"rkd_distance": 50.0, "rkd_angle": 100.0} and rkd.ce_weight() == 1.0


def test_bad_values_raise():
    ctx = ctx_for(fake_output("resnet8x4"), fake_output("resnet32x4", seed=1))
    with pytest.raises(HyperparameterError):
        build_method("fitnet", ctx, {"fitnet": {"hint_layer": 4}})  # 3-stage nets have features[0..3]
    with pytest.raises(HyperparameterError):
        build_method("at", ctx, {"at": {"stage_align": "middle"}})


@pytest.mark.parametrize("teacher,student", PAIRS)
def test_all_pairs_build_and_backprop(teacher, student):
    s, t = fake_output(student, grad=True), fake_output(teacher, seed=1)
    ctx = ctx_for(fake_output(student), fake_output(teacher, seed=1))
    for name in ("fitnet", "at", "rkd"):
        m = build_method(name, ctx)
        m.train()
        out = m.losses(s, t, dummy_batch())
        assert set(out) == set(m.loss_weights())
        total = sum(m.loss_weights()[k] * v for k, v in out.items())
        assert torch.isfinite(total)
        total.backward()
    assert s.features[2].grad is not None and s.embedding.grad is not None


# --------------------------------------------------------------------------- fitnet
# Reference: RepDistiller models/util.py ConvReg (conv + BatchNorm2d + ReLU) followed by
# distiller_zoo/FitNet.py HintLoss (nn.MSELoss, mean); train_student.py sizes ConvReg from
# feat_s[hint_layer].shape / feat_t[hint_layer].shape.

def ref_conv_valid(x, w, b, stride=1, padding=0):
    """Conv2d via unfold (im2col) + einsum."""
    B, _, H, W = x.shape
    co, ci, kh, kw = w.shape
    cols = F.unfold(x, (kh, kw), padding=padding, stride=stride)  # (B, ci*kh*kw, L)
    out = torch.einsum("ok,bkl->bol", w.reshape(co, -1), cols) + b.view(1, -1, 1)
    oh = (H + 2 * padding - kh) // stride + 1
    ow = (W + 2 * padding - kw) // stride + 1
    return out.reshape(B, co, oh, ow)


def ref_conv_transpose(x, w, b, stride=2, padding=1):
    """ConvTranspose2d by scattering each input pixel times the kernel (loops)."""
    B, ci, H, W = x.shape
    _, co, kh, kw = w.shape  # transposed-conv weight layout (in, out, kh, kw)
    full = torch.zeros(B, co, (H - 1) * stride + kh, (W - 1) * stride + kw, dtype=x.dtype)
    for i in range(H):
        for j in range(W):
            contrib = torch.einsum("bi,iokl->bokl", x[:, :, i, j], w)
            pad = (j * stride, full.shape[3] - j * stride - kw, i * stride, full.shape[2] - i * stride - kh)
            full = full + F.pad(contrib, pad)
    out = full[:, :, padding: full.shape[2] - padding, padding: full.shape[3] - padding]
    return out + b.view(1, -1, 1, 1)


def ref_bn_relu_mse(y, gamma, beta, f_t, eps=1e-5):
    n = y.shape[0] * y.shape[2] * y.shape[3]
    mean = y.sum(dim=(0, 2, 3), keepdim=True) / n
    var = ((y - mean) ** 2).sum(dim=(0, 2, 3), keepdim=True) / n  # biased, as BN in train mode
    z = (y - mean) / torch.sqrt(var + eps) * gamma.view(1, -1, 1, 1) + beta.view(1, -1, 1, 1)
    r = torch.where(z > 0, z, torch.zeros_like(z))
    return ((r - f_t) ** 2).sum() / r.numel()


def fix_regressor(m):
    """Deterministic weights: conv = linspace, bias / BN affine = known values; float64, train mode."""
    reg = m.regressor.double()
    with torch.no_grad():
        w = reg.conv.weight
        w.copy_(torch.linspace(-0.5, 0.7, w.numel(), dtype=torch.float64).reshape(w.shape))
        reg.conv.bias.copy_(torch.linspace(-0.1, 0.2, reg.conv.bias.numel(), dtype=torch.float64))
        reg.bn.weight.copy_(torch.linspace(0.5, 1.5, reg.bn.weight.numel(), dtype=torch.float64))
        reg.bn.bias.copy_(torch.linspace(-0.2, 0.3, reg.bn.bias.numel(), dtype=torch.float64))
    m.train()
    return reg


def _maps(b, c, h, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, h, h, generator=g, dtype=torch.float64)


@pytest.mark.parametrize(
    "s_hw,t_hw,mode",
    [(8, 8, "equal"), (16, 8, "stride2"), (4, 8, "transposed"), (6, 4, "valid"), (2, 8, "pool_teacher")],
)
def test_fitnet_golden(s_hw, t_hw, mode):
    B, Cs, Ct = 3, 4, 5
    stem_s, stem_t = _maps(B, 2, 2 * s_hw, 1), _maps(B, 2, 2 * t_hw, 2)
    f_s = _maps(B, Cs, s_hw, 3).requires_grad_(True)
    f_t = _maps(B, Ct, t_hw, 4).abs()
    # hint_layer 1 here: features = [stem, hinted map]
    s_out, t_out = output_from([stem_s, f_s]), output_from([stem_t, f_t])
    m = build_method("fitnet", ctx_for(s_out, t_out), {"fitnet": {"hint_layer": 1}})
    reg = fix_regressor(m)
    assert reg.mode == mode
    got = m.losses(s_out, t_out, dummy_batch(B))["fitnet_hint"]
    (g_got,) = torch.autograd.grad(got, f_s)

    x = f_s.detach().clone().requires_grad_(True)
    w, bias = reg.conv.weight.detach(), reg.conv.bias.detach()
    target = f_t
    if mode in ("equal", "pool_teacher"):
        y = torch.einsum("oi,bihw->bohw", w[:, :, 0, 0], x) + bias.view(1, -1, 1, 1)
        if mode == "pool_teacher":  # adaptive pool with an exact divisor = block mean
            k = t_hw // s_hw
            target = f_t.reshape(B, Ct, s_hw, k, s_hw, k).mean(dim=(3, 5))
    elif mode == "stride2":
        y = ref_conv_valid(x, w, bias, stride=2, padding=1)
    elif mode == "valid":
        y = ref_conv_valid(x, w, bias)
    else:
        y = ref_conv_transpose(x, w, bias)
    want = ref_bn_relu_mse(y, reg.bn.weight.detach(), reg.bn.bias.detach(), target)
    (g_want,) = torch.autograd.grad(want, x)
    close(got, want)
    close(g_got, g_want)


@pytest.mark.parametrize("s_hw,t_hw", [(16, 8), (4, 8), (8, 8), (10, 8)])
def test_fitnet_regressor_gives_teacher_shape(s_hw, t_hw):
    s_out = output_from([_maps(2, 3, 32, 0), _maps(2, 6, s_hw, 1)])
    t_out = output_from([_maps(2, 3, 32, 0), _maps(2, 7, t_hw, 2)])
    m = build_method("fitnet", ctx_for(s_out, t_out), {"fitnet": {"hint_layer": 1}}).double()
    assert m.regressor(s_out.features[1]).shape == t_out.features[1].shape


def test_fitnet_preset_modes():
    expect = {
        ("resnet32x4", "resnet8x4"): "equal",
        ("vgg13", "MobileNetV2"): "equal",
        ("ResNet50", "MobileNetV2"): "transposed",
        ("ResNet50", "vgg8"): "transposed",
        ("resnet32x4", "ShuffleV1"): "transposed",
        ("wrn_40_2", "ShuffleV1"): "transposed",
        ("vgg13", "resnet20"): "stride2",
    }
    for (t, s), mode in expect.items():
        assert build_method("fitnet", ctx_for(fake_output(s), fake_output(t))).regressor.mode == mode


def test_fitnet_hand_computed():
    # 1x1 maps, one channel, batch 2: student x = [1, 3]; conv weight 2, bias 0 -> [2, 6];
    # BN (train, gamma 1, beta 0): mean 4, biased var 4 -> [-2, 2] / sqrt(4 + 1e-5)
    # = [-0.99999875, 0.99999875]; ReLU -> [0, 0.99999875]; teacher [0.5, 0.5]
    # MSE = (0.5^2 + 0.49999875^2) / 2 = 0.249999375002
    x = torch.tensor([1.0, 3.0], dtype=torch.float64).view(2, 1, 1, 1)
    t = torch.full((2, 1, 1, 1), 0.5, dtype=torch.float64)
    s_out, t_out = output_from([x, x]), output_from([t, t])
    m = build_method("fitnet", ctx_for(s_out, t_out), {"fitnet": {"hint_layer": 1}}).double().train()
    with torch.no_grad():
        m.regressor.conv.weight.fill_(2.0)
        m.regressor.conv.bias.zero_()
    got = m.losses(s_out, t_out, dummy_batch())["fitnet_hint"]
    close(got, torch.tensor(0.24999937500195313, dtype=torch.float64))


# --------------------------------------------------------------------------- at
# Reference: RepDistiller distiller_zoo/AT.py Attention.at / at_loss (p = 2), summed over
# feat[1:-1] pairs by helper/loops.py (`loss_kd = sum(loss_group)`); the larger map (by
# height) is adaptive-avg-pooled to the smaller.

def ref_attention(f, p):
    """Per sample loop: channel mean of f^p, flattened, divided by its l2 norm (eps 1e-12)."""
    rows = []
    for b in range(f.shape[0]):
        acc = torch.zeros_like(f[b, 0])
        for c in range(f.shape[1]):
            acc = acc + f[b, c] ** p
        a = (acc / f.shape[1]).reshape(-1)
        rows.append(a / torch.clamp(torch.sqrt((a * a).sum()), min=1e-12))
    return torch.stack(rows)


def ref_block_pool(f, size):
    B, C, H, W = f.shape
    k = H // size
    return f.reshape(B, C, size, k, size, k).mean(dim=(3, 5))


def ref_at(s_feats, t_feats, p=2.0):
    total = 0.0
    for fs, ft in zip(s_feats, t_feats):
        if fs.shape[2] > ft.shape[2]:
            fs = ref_block_pool(fs, ft.shape[2])
        elif fs.shape[2] < ft.shape[2]:
            ft = ref_block_pool(ft, fs.shape[2])
        d = ref_attention(fs, p) - ref_attention(ft, p)
        total = total + (d * d).sum() / d.numel()
    return total


def _feature_list(sizes, channels, seed, grad=False):
    g = torch.Generator().manual_seed(seed)
    out = [torch.randn(2, channels, sizes[0], sizes[0], generator=g, dtype=torch.float64)]
    for s in sizes[1:]:
        out.append(torch.randn(2, channels, s, s, generator=g, dtype=torch.float64).requires_grad_(grad))
    return out


@pytest.mark.parametrize(
    "t_sizes,s_sizes,p",
    [
        ([32, 32, 16, 8], [32, 32, 16, 8], 2.0),  # resnet32x4 -> resnet8x4
        ([32, 32, 16, 8, 4], [16, 16, 8, 4, 2], 2.0),  # ResNet50 -> MobileNetV2: teacher pooled
        ([32, 16, 8, 4, 4], [16, 16, 8, 4, 2], 2.0),  # vgg13 -> MobileNetV2: last stage pooled
        ([16, 16, 8, 4, 2], [32, 32, 16, 8, 4], 2.0),  # student larger: student pooled
        ([32, 32, 16, 8], [32, 32, 16, 8], 3.0),  # another p
    ],
)
def test_at_golden(t_sizes, s_sizes, p):
    s_feats = _feature_list(s_sizes, 3, seed=1, grad=True)
    t_feats = [f.abs() for f in _feature_list(t_sizes, 4, seed=2)]
    s_out, t_out = output_from(s_feats), output_from(t_feats)
    m = build_method("at", ctx_for(s_out, t_out), {"at": {"p": p}})
    got = m.losses(s_out, t_out, dummy_batch())["at"]
    g_got = torch.autograd.grad(got, s_feats[1:])

    xs = [s_feats[0]] + [f.detach().clone().requires_grad_(True) for f in s_feats[1:]]
    want = ref_at(xs[1:], t_feats[1:], p)
    g_want = torch.autograd.grad(want, xs[1:])
    close(got, want)
    for a, b in zip(g_got, g_want):
        close(a, b)


@pytest.mark.parametrize("align", ["first", "last"])
def test_at_stage_count_mismatch(align):
    # student: 4 stages (vgg-like sizes), teacher: 3 stages (resnet-like sizes)
    s_feats = _feature_list([32, 16, 8, 4, 4], 3, seed=5, grad=True)
    t_feats = [f.abs() for f in _feature_list([32, 32, 16, 8], 4, seed=6)]
    s_out, t_out = output_from(s_feats), output_from(t_feats)
    m = build_method("at", ctx_for(s_out, t_out), {"at": {"stage_align": align}})
    got = m.losses(s_out, t_out, dummy_batch())["at"]
    if align == "first":  # RepDistiller: zip(feat_s[1:-1], feat_t[1:-1])
        assert m.pairs == [(1, 1), (2, 2), (3, 3)]
        want = ref_at(s_feats[1:4], t_feats[1:4])
    else:
        assert m.pairs == [(2, 1), (3, 2), (4, 3)]
        want = ref_at(s_feats[2:5], t_feats[1:4])
    close(got, want)
    assert paired_stages(3, 4, "last") == [(1, 2), (2, 3), (3, 4)]


def test_at_hand_computed():
    # one sample, one channel, 2x2 maps, p = 2
    # student [[1, 2], [3, 4]] -> squares [1, 4, 9, 16], norm sqrt(354) -> a_s = [1, 4, 9, 16] / sqrt(354)
    # teacher all ones -> a_t = [0.5, 0.5, 0.5, 0.5]
    # |a_s - a_t|^2 = 1 + 1 - 2 * 0.5 * 30 / sqrt(354) = 2 - 30 / sqrt(354); mean over 4 entries:
    # at = (2 - 30 / sqrt(354)) / 4 = 0.1013794974104496
    f_s = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64).view(1, 1, 2, 2).requires_grad_(True)
    f_t = torch.ones(1, 1, 2, 2, dtype=torch.float64)
    s_out, t_out = output_from([f_s, f_s]), output_from([f_t, f_t])
    m = build_method("at", ctx_for(s_out, t_out))
    got = m.losses(s_out, t_out, dummy_batch(1))["at"]
    close(got, torch.tensor(0.1013794974104496, dtype=torch.float64))
    close(got, torch.tensor((2 - 30 / math.sqrt(354)) / 4, dtype=torch.float64))


# --------------------------------------------------------------------------- rkd
# Reference: RepDistiller distiller_zoo/RKD.py RKDLoss.forward (distance + angle terms,
# smooth_l1 with its default beta 1, pdist(squared=False, eps=1e-12)), applied to
# feat[-1] by helper/loops.py.

def ref_smooth_l1(a, b):
    d = (a - b).abs()
    return torch.where(d < 1, 0.5 * d * d, d - 0.5).sum() / d.numel()


def ref_rkd_distance(s, t):
    def norm_dist(e):
        d = torch.cdist(e, e)
        n = e.shape[0]
        return d / (d.sum() / (n * (n - 1)))  # mean over off-diagonal pairs (all distinct points)

    return ref_smooth_l1(norm_dist(s), norm_dist(t))


def ref_angles(e):
    n = e.shape[0]
    vals = []
    for i in range(n):
        for j in range(n):
            for k in range(n):
                if i == j or i == k:
                    vals.append(torch.zeros((), dtype=e.dtype))
                    continue
                v1, v2 = e[j] - e[i], e[k] - e[i]
                vals.append((v1 * v2).sum() / (torch.linalg.vector_norm(v1) * torch.linalg.vector_norm(v2)))
    return torch.stack(vals)


def ref_rkd_angle(s, t):
    return ref_smooth_l1(ref_angles(s), ref_angles(t))


@pytest.mark.parametrize("B,Ds,Dt,scale", [(6, 5, 7, 1.0), (5, 8, 3, 10.0), (4, 16, 16, 0.1)])
def test_rkd_golden(B, Ds, Dt, scale):
    g = torch.Generator().manual_seed(B * 100 + Ds)
    s = (scale * torch.randn(B, Ds, generator=g, dtype=torch.float64)).requires_grad_(True)
    t = torch.randn(B, Dt, generator=g, dtype=torch.float64)
    s_out, t_out = output_from([], s), output_from([], t)
    m = build_method("rkd", ctx_for(s_out, t_out))
    out = m.losses(s_out, t_out, dummy_batch(B))
    for term, ref in (("rkd_distance", ref_rkd_distance), ("rkd_angle", ref_rkd_angle)):
        (g_got,) = torch.autograd.grad(out[term], s, retain_graph=True)
        x = s.detach().clone().requires_grad_(True)
        want = ref(x, t)
        (g_want,) = torch.autograd.grad(want, x)
        close(out[term], want)
        close(g_got, g_want)
    # the weighted sum equals RepDistiller's single RKDLoss value (w_d = 25, w_a = 50)
    w = m.loss_weights()
    total = w["rkd_distance"] * out["rkd_distance"] + w["rkd_angle"] * out["rkd_angle"]
    close(total, 25 * ref_rkd_distance(s.detach(), t) + 50 * ref_rkd_angle(s.detach(), t))


def test_rkd_hand_computed():
    # student: 3-4-5 right triangle (0,0), (3,0), (0,4): distances 3, 4, 5 (each twice off the
    # diagonal), mean 4 -> normalised 0.75, 1.0, 1.25.
    # teacher: (0,0), (1,0), (0,1): distances 1, 1, sqrt 2, mean (2 + sqrt 2) / 3
    # -> normalised 3/(2+sqrt2) = 0.87867966, 0.87867966, 3 sqrt2/(2+sqrt2) = 1.24264069.
    # differences -0.12867966, 0.12132034, 0.00735931 (all < 1: smooth-l1 = x^2 / 2), each twice,
    # mean over the 9 entries: rkd_distance = 2 * sum(x^2 / 2) / 9 = 0.0034812488032349314
    # angles (cosines at each vertex between the two other points): student 0, 3/5, 4/5;
    # teacher 0, 1/sqrt2, 1/sqrt2; each appears twice (j, k swapped) in the 27 entries, every
    # other entry is 1 (j == k != i) or 0 (j or k == i) in both:
    # rkd_angle = ((1/sqrt2 - 0.6)^2 + (1/sqrt2 - 0.8)^2) / 27 = 0.0007444819510247017
    s = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
    t = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    s_out, t_out = output_from([], s), output_from([], t)
    out = build_method("rkd", ctx_for(s_out, t_out)).losses(s_out, t_out, dummy_batch(3))
    close(out["rkd_distance"], torch.tensor(0.0034812488032349314, dtype=torch.float64))
    close(out["rkd_angle"], torch.tensor(0.0007444819510247017, dtype=torch.float64))


def test_rkd_float32_and_single_sample():
    s = torch.randn(8, 32, requires_grad=True)
    t = torch.randn(8, 64)
    s_out, t_out = output_from([], s), output_from([], t)
    m = build_method("rkd", ctx_for(s_out, t_out))
    out = m.losses(s_out, t_out, dummy_batch(8))
    torch.testing.assert_close(
        out["rkd_distance"].double(), ref_rkd_distance(s.double(), t.double()).detach(), rtol=1e-4, atol=1e-7
    )
    # a batch of one: no pair, the distance term is 0 (RepDistiller would give NaN), angle 0
    one = m.losses(output_from([], s[:1]), output_from([], t[:1]), dummy_batch(1))
    assert one["rkd_distance"].item() == 0.0 and one["rkd_angle"].item() == 0.0
