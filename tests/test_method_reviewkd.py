"""reviewkd against independent transcriptions of the official code (dvlab-research/ReviewKD
``CIFAR-100/model/reviewkd.py``: ``hcl``, ``ABF``, ``ReviewKD.forward``; ``train.py``'s warm-up), the
official per-pair module tables, and cohort == solo training."""
from __future__ import annotations

import functools
import math

import pytest
import torch

from kdcore.config import load_preset, parse_pair
from benchmarks.grid import probe
from kdcore.models import create_model
from methods import BuildContext, ModelOutput, Progress, build_method
from methods.reviewkd import ABF, hcl, warmup_ramp
from test_harness import assert_bitwise_equal  # the harness tests' bitwise cohort = solo check, not a copy
from cohorts import digits_slice, make_run, random_teacher, train

CPU = torch.device("cpu")
RTOL, ATOL = 1e-5, 1e-6


# --- independent transcriptions of the official code ---------------------------------------------
def ref_pool(x: torch.Tensor, size: int) -> torch.Tensor:
    """Adaptive average pooling written out: cell (i, j) averages rows floor(i H / s) .. ceil((i+1) H / s)."""
    h, w = x.shape[2], x.shape[3]
    rows = []
    for i in range(size):
        r0, r1 = (i * h) // size, -((-(i + 1) * h) // size)
        cells = []
        for j in range(size):
            c0, c1 = (j * w) // size, -((-(j + 1) * w) // size)
            cells.append(x[:, :, r0:r1, c0:c1].sum(dim=(2, 3)) / ((r1 - r0) * (c1 - c0)))
        rows.append(torch.stack(cells, dim=-1))
    return torch.stack(rows, dim=-2)


def ref_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).pow(2).sum() / a.numel()


def ref_hcl(fstudent, fteacher):
    """The official ``hcl``, loop for loop."""
    loss_all = 0.0
    for fs, ft in zip(fstudent, fteacher):
        h = fs.shape[2]
        loss = ref_mse(fs, ft)
        cnt, tot = 1.0, 1.0
        for l in [4, 2, 1]:
            if l >= h:
                continue
            cnt /= 2.0
            loss = loss + ref_mse(ref_pool(fs, l), ref_pool(ft, l)) * cnt
            tot += cnt
        loss_all = loss_all + loss / tot
    return loss_all


def ref_nearest(x: torch.Tensor, size) -> torch.Tensor:
    """Nearest resizing by index arithmetic: source index floor(dst * in / out)."""
    h, w = x.shape[2], x.shape[3]
    rows = torch.tensor([math.floor(i * h / size[0]) for i in range(size[0])])
    cols = torch.tensor([math.floor(j * w / size[1]) for j in range(size[1])])
    return x[:, :, rows][:, :, :, cols]


def ref_bn(x, bn: dict, training: bool):
    if training:
        mean = x.mean(dim=(0, 2, 3))
        var = (x - mean.view(1, -1, 1, 1)).pow(2).mean(dim=(0, 2, 3))
    else:
        mean, var = bn["mean"], bn["var"]
    return ((x - mean.view(1, -1, 1, 1)) / torch.sqrt(var.view(1, -1, 1, 1) + 1e-5) * bn["weight"].view(1, -1, 1, 1)
            + bn["bias"].view(1, -1, 1, 1))


def ref_conv1x1(x, weight, bias=None):
    out = torch.einsum("nchw,oc->nohw", x, weight[:, :, 0, 0])
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def ref_conv3x3(x, weight):
    n, c, h, w = x.shape
    padded = torch.zeros(n, c, h + 2, w + 2, dtype=x.dtype)
    padded[:, :, 1:-1, 1:-1] = x
    out = 0
    for di in range(3):
        for dj in range(3):
            out = out + torch.einsum("nchw,oc->nohw", padded[:, :, di:di + h, dj:dj + w], weight[:, :, di, dj])
    return out


class RefABF:
    """The official ``ABF``, on its own copies of a module's weights (leaf tensors, for their gradients)."""

    def __init__(self, abf: ABF):
        def bn(m):
            return {"weight": m.weight.detach().clone().requires_grad_(), "bias": m.bias.detach().clone().requires_grad_(),
                    "mean": m.running_mean.clone(), "var": m.running_var.clone()}

        self.w1 = abf.conv1[0].weight.detach().clone().requires_grad_()
        self.bn1 = bn(abf.conv1[1])
        self.w2 = abf.conv2[0].weight.detach().clone().requires_grad_()
        self.bn2 = bn(abf.conv2[1])
        self.fuse = abf.att_conv is not None
        if self.fuse:
            self.wa = abf.att_conv[0].weight.detach().clone().requires_grad_()
            self.ba = abf.att_conv[0].bias.detach().clone().requires_grad_()

    def params(self):
        out = [self.w1, self.bn1["weight"], self.bn1["bias"], self.w2, self.bn2["weight"], self.bn2["bias"]]
        return out + ([self.wa, self.ba] if self.fuse else [])

    def __call__(self, x, y=None, shape=None, out_shape=None, training=True):
        n, _, h, w = x.shape
        x = ref_bn(ref_conv1x1(x, self.w1), self.bn1, training)
        if self.fuse:
            y = ref_nearest(y, (shape, shape))
            z = torch.sigmoid(ref_conv1x1(torch.cat([x, y], dim=1), self.wa, self.ba))
            x = x * z[:, 0].view(n, 1, h, w) + y * z[:, 1].view(n, 1, h, w)
        if x.shape[-1] != out_shape:
            x = ref_nearest(x, (out_shape, out_shape))
        return ref_bn(ref_conv3x3(x, self.w2), self.bn2, training), x


def ref_review(abfs, student_levels, shapes, out_shapes):
    """The official ``ReviewKD.forward``: ``student_levels`` shallow to deep (embedding last) as
    ``feat`` is, ``abfs`` / ``shapes`` / ``out_shapes`` deep first."""
    x = student_levels[::-1]
    results = []
    out, res = abfs[0](x[0], out_shape=out_shapes[0])
    results.append(out)
    for features, abf, shape, out_shape in zip(x[1:], abfs[1:], shapes[1:], out_shapes[1:]):
        out, res = abf(features, res, shape, out_shape)
        results.insert(0, out)
    return results


# --- HCL ------------------------------------------------------------------------------------------
HCL_SHAPES = [(2, 3, 8, 8), (2, 4, 4, 4), (3, 5, 2, 2), (2, 6, 1, 1), (2, 3, 5, 5), (2, 2, 3, 3), (2, 3, 16, 16)]


def test_hcl_value_and_gradient_match_the_official_transcription():
    g = torch.Generator().manual_seed(0)
    fs = [torch.randn(s, generator=g, requires_grad=True) for s in HCL_SHAPES]
    ft = [torch.randn(s, generator=g) for s in HCL_SHAPES]
    ours = hcl(fs, ft)
    ours_grad = torch.autograd.grad(ours, fs)
    fs_ref = [f.detach().clone().requires_grad_() for f in fs]
    ref = ref_hcl(fs_ref, ft)
    ref_grad = torch.autograd.grad(ref, fs_ref)
    torch.testing.assert_close(ours, ref, rtol=RTOL, atol=0)
    for a, b in zip(ours_grad, ref_grad):
        torch.testing.assert_close(a, b, rtol=RTOL, atol=ATOL)
    # one level at a time too (every pooling rule: none, 1 only, 2 and 1, all three)
    for s, t in zip(fs, ft):
        torch.testing.assert_close(hcl([s], [t]), ref_hcl([s.detach()], [t]), rtol=RTOL, atol=0)


def test_hcl_by_hand():
    two = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)
    # 2x2: l = 4 and 2 skipped (l >= h); full mse 30/4 = 7.5, 1x1 pooled mean 2.5 -> 6.25 at weight 1/2
    assert hcl([two], [torch.zeros_like(two)]).item() == pytest.approx((7.5 + 6.25 / 2) / 1.5, rel=1e-6)
    four = torch.arange(16.0).view(1, 1, 4, 4)
    # 4x4: full 1240/16 = 77.5; 2x2 block means 2.5, 4.5, 10.5, 12.5 -> 73.25 at 1/2; mean 7.5 -> 56.25 at 1/4
    assert hcl([four], [torch.zeros_like(four)]).item() == pytest.approx(
        (77.5 + 73.25 / 2 + 56.25 / 4) / 1.75, rel=1e-6)
    one = torch.tensor([3.0, -1.0]).view(1, 2, 1, 1)  # 1x1: the plain mse
    assert hcl([one], [torch.zeros_like(one)]).item() == pytest.approx(5.0, rel=1e-6)
    # summed over levels
    total = hcl([two, four, one], [torch.zeros_like(two), torch.zeros_like(four), torch.zeros_like(one)])
    assert total.item() == pytest.approx((7.5 + 3.125) / 1.5 + 73.25 + 5.0, rel=1e-6)


# --- ABF ------------------------------------------------------------------------------------------
def _randomise_bn(abf: ABF, g):
    for bn in (abf.conv1[1], abf.conv2[1]):
        bn.weight.data = torch.rand(bn.weight.shape, generator=g) + 0.5
        bn.bias.data = torch.randn(bn.bias.shape, generator=g)
        bn.running_mean = torch.randn(bn.running_mean.shape, generator=g)
        bn.running_var = torch.rand(bn.running_var.shape, generator=g) + 0.5


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("fuse,in_hw,res_hw,out_hw", [
    (False, 1, None, 1),    # the embedding level
    (True, 4, 2, 8),        # residual upsampled 2x, output upsampled to a larger teacher map
    (True, 4, 4, 4),        # equal sizes (vgg's two 4x4 stages)
    (True, 8, 4, 4),        # output resized down
])
def test_abf_matches_the_official_transcription(training, fuse, in_hw, res_hw, out_hw):
    g = torch.Generator().manual_seed(1)
    torch.manual_seed(2)
    abf = ABF(5, 6, 7, fuse)
    _randomise_bn(abf, g)
    abf.train(training)
    ref = RefABF(abf)
    x = torch.randn(3, 5, in_hw, in_hw, generator=g, requires_grad=True)
    res = torch.randn(3, 6, res_hw, res_hw, generator=g, requires_grad=True) if fuse else None
    out, fused = abf(x, res, (out_hw, out_hw))
    x_ref = x.detach().clone().requires_grad_()
    res_ref = res.detach().clone().requires_grad_() if fuse else None
    out_ref, fused_ref = ref(x_ref, res_ref, in_hw, out_hw, training=training)
    assert out.shape == (3, 7, out_hw, out_hw) and fused.shape == (3, 6, out_hw, out_hw)
    torch.testing.assert_close(out, out_ref, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(fused, fused_ref, rtol=RTOL, atol=ATOL)
    # gradients of both outputs, through the inputs and every weight, in float64 (a train-mode BN's input
    # gradient is a difference of near-equal sums: float32 rounding would dominate the comparison)
    abf.double()
    ref = RefABF(abf)
    x, x_ref = (x.detach().double().requires_grad_() for _ in range(2))
    res, res_ref = ((res.detach().double().requires_grad_() for _ in range(2)) if fuse else (None, None))
    out, fused = abf(x, res, (out_hw, out_hw))
    out_ref, fused_ref = ref(x_ref, res_ref, in_hw, out_hw, training=training)
    w_out, w_fused = torch.randn(out.shape, generator=g).double(), torch.randn(fused.shape, generator=g).double()
    loss, loss_ref = (out * w_out).sum() + (fused * w_fused).sum(), (out_ref * w_out).sum() + (fused_ref * w_fused).sum()
    ours = torch.autograd.grad(loss, [x] + ([res] if fuse else []) + _abf_params(abf))
    theirs = torch.autograd.grad(loss_ref, [x_ref] + ([res_ref] if fuse else []) + ref.params())
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def _abf_params(abf: ABF):
    out = [abf.conv1[0].weight, abf.conv1[1].weight, abf.conv1[1].bias,
           abf.conv2[0].weight, abf.conv2[1].weight, abf.conv2[1].bias]
    return out + ([abf.att_conv[0].weight, abf.att_conv[0].bias] if abf.att_conv is not None else [])


def test_abf_initialisation():
    torch.manual_seed(0)
    abf = ABF(64, 32, 16, fuse=True)
    # kaiming_uniform_(a=1): bound sqrt(6 / ((1 + a^2) fan_in)) = sqrt(3 / fan_in)
    for conv, fan_in in ((abf.conv1[0], 64), (abf.conv2[0], 32 * 9)):
        assert conv.bias is None
        assert conv.weight.abs().max() <= math.sqrt(3 / fan_in) and conv.weight.abs().max() > 0.9 * math.sqrt(3 / fan_in)
    assert abf.att_conv[0].bias is not None and abf.att_conv[0].kernel_size == (1, 1)
    assert isinstance(abf.att_conv[1], torch.nn.Sigmoid)
    assert ABF(4, 4, 4, fuse=False).att_conv is None


# --- warm-up ----------------------------------------------------------------------------------------
def _small_ctx(n_t_stages=3, t_preact_shift=-1.0, s_preact_shift=-0.5, batch=4, seed=0):
    """Hand-made probe outputs: student stages 3@8x8, 5@4x4, 6@2x2, embedding 7; teacher stages
    (4, 6, 8 channels, 16/8/4 px, deepest last; one more shallow 3@32x32 when n_t_stages=4),
    embedding 9. Pre-ReLU maps differ from the post-ReLU ones, so the test sees which is read."""
    g = torch.Generator().manual_seed(seed)

    def out(stage_shapes, emb, shift):
        feats = [torch.randn(batch, *stage_shapes[0], generator=g)]
        feats += [torch.randn(batch, *s, generator=g) for s in stage_shapes[1:]]
        return ModelOutput(logits=torch.randn(batch, 10, generator=g), features=feats,
                           embedding=torch.randn(batch, emb, generator=g),
                           preact_features=[f + shift for f in feats])

    s_shapes = [(2, 8, 8), (3, 8, 8), (5, 4, 4), (6, 2, 2)]
    t_shapes = [(2, 32, 32), (4, 16, 16), (6, 8, 8), (8, 4, 4)]
    if n_t_stages == 4:
        t_shapes = [(2, 32, 32), (3, 32, 32)] + t_shapes[1:]
    s, t = out(s_shapes, 7, s_preact_shift), out(t_shapes, 9, t_preact_shift)
    return BuildContext(s, t, 10, torch.zeros(20, dtype=torch.long)), s, t


@pytest.mark.parametrize("base,cases", [
    ("one_based", [(0.0, 1 / 20), (0.99, 1 / 20), (1.0, 2 / 20), (1.5, 2 / 20), (18.7, 19 / 20), (19.0, 1.0),
                   (20.0, 1.0), (239.9, 1.0)]),
    ("zero_based", [(0.0, 0.0), (0.99, 0.0), (1.0, 1 / 20), (19.5, 19 / 20), (20.0, 1.0), (239.9, 1.0)]),
])
def test_warmup_weight_follows_the_progress(base, cases):
    ctx, _, _ = _small_ctx()
    m = build_method("reviewkd", ctx, {"reviewkd": {"warmup_epoch": base}})
    assert m.progress == Progress(0.0, 1)
    for epoch, ramp in cases:
        m.set_progress(Progress(epoch, 240))
        assert m.loss_weights() == {"reviewkd": pytest.approx(5.0 * ramp, rel=1e-12)}
    assert m.ce_weight() == 1.0
    m = build_method("reviewkd", ctx, {"reviewkd": {"warmup": 2.5, "weight": 2.0, "gamma": 0.5}})
    m.set_progress(Progress(1.2, 10))
    assert m.loss_weights() == {"reviewkd": pytest.approx(2.0 * 2 / 2.5)} and m.ce_weight() == 0.5
    assert warmup_ramp(0.0, 20.0, 1) == 1 / 20 and warmup_ramp(0.0, 20.0, 0) == 0.0


# --- the whole method -------------------------------------------------------------------------------
def _levels(out: ModelOutput, maps, stages):
    return [maps[i] for i in stages] + [out.embedding.view(out.embedding.shape[0], -1, 1, 1)]


def _cast(out: ModelOutput, dtype) -> ModelOutput:
    return ModelOutput(out.logits.to(dtype), [f.to(dtype) for f in out.features], out.embedding.to(dtype),
                       [f.to(dtype) for f in out.preact_features])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n_t_stages,student_maps", [(3, "features"), (3, "preact"), (4, "features")])
def test_loss_and_gradients_match_the_official_forward(n_t_stages, student_maps, dtype):
    """float32: the loss to rtol 1e-5, gradients to 1e-4; float64: both to 1e-9 (the transcription, not rounding)."""
    ctx, s, t = _small_ctx(n_t_stages)
    torch.manual_seed(0)
    m = build_method("reviewkd", ctx, {"reviewkd": {"student_maps": student_maps}})
    m.train()
    m.to(dtype)
    s, t = _cast(s, dtype), _cast(t, dtype)
    rtol, grad_rtol, atol = (RTOL, 1e-4, 1e-6) if dtype == torch.float32 else (1e-9, 1e-9, 1e-12)
    # the deepest stages pair up (the teacher's extra shallow stage is left out), the embeddings on top
    assert m.pairs == ([(1, 1), (2, 2), (3, 3)] if n_t_stages == 3 else [(1, 2), (2, 3), (3, 4)])
    assert [a.conv1[0].in_channels for a in m.abfs] == [7, 6, 5, 3]
    assert [a.conv1[0].out_channels for a in m.abfs] == [7, 7, 7, 7]  # mid = min(512, 7)
    assert [a.conv2[0].out_channels for a in m.abfs] == [9, 8, 6, 4]
    assert [a.att_conv is None for a in m.abfs] == [True, False, False, False]
    assert m.out_sizes == [(1, 1), (4, 4), (8, 8), (16, 16)]
    assert m.extra_parameters() == sum(p.numel() for p in m.parameters())

    # inputs that require grad: the student's maps and embedding
    s_feats = [f.clone().requires_grad_() for f in s.features]
    s_pre = [f.clone().requires_grad_() for f in s.preact_features]
    s_emb = s.embedding.clone().requires_grad_()
    student = ModelOutput(s.logits, s_feats, s_emb, s_pre)
    loss = m.losses(student, t, None)["reviewkd"]
    inputs = [s_emb] + (s_feats if student_maps == "features" else s_pre)[1:]
    ours = torch.autograd.grad(loss, inputs + list(m.parameters()), allow_unused=True)

    refs = [RefABF(a) for a in m.abfs]
    r_feats = [f.detach().clone().requires_grad_() for f in (s.features if student_maps == "features"
                                                            else s.preact_features)]
    r_emb = s.embedding.detach().clone().requires_grad_()
    t_stages = [1, 2, 3] if n_t_stages == 3 else [2, 3, 4]
    student_levels = [r_feats[1], r_feats[2], r_feats[3], r_emb.view(4, 7, 1, 1)]
    teacher_levels = _levels(t, t.preact_features, t_stages)   # the teacher's PRE-ReLU maps
    results = ref_review(refs, student_levels, shapes=[1, 2, 4, 8], out_shapes=[1, 4, 8, 16])
    ref = ref_hcl(results, teacher_levels)
    theirs = torch.autograd.grad(ref, [r_emb] + r_feats[1:] + [p for r in refs for p in r.params()])
    torch.testing.assert_close(loss, ref, rtol=rtol, atol=0)
    ours_by_name = dict(zip(["emb", "s1", "s2", "s3"], ours[:4]))
    for name, b in zip(["emb", "s1", "s2", "s3"], theirs[:4]):
        torch.testing.assert_close(ours_by_name[name], b, rtol=grad_rtol, atol=atol)
    params = dict(zip([n for n, _ in m.named_parameters()], ours[4:]))
    ref_params = iter(theirs[4:])
    for i, a in enumerate(m.abfs):
        names = ["conv1.0.weight", "conv1.1.weight", "conv1.1.bias", "conv2.0.weight", "conv2.1.weight",
                 "conv2.1.bias"] + (["att_conv.0.weight", "att_conv.0.bias"] if a.att_conv is not None else [])
        for n in names:
            torch.testing.assert_close(params[f"abfs.{i}.{n}"], next(ref_params), rtol=grad_rtol, atol=atol)
    assert next(ref_params, None) is None
    # the post-ReLU teacher maps are not what it reads
    wrong = ref_hcl(ref_review(refs, student_levels, [1, 2, 4, 8], [1, 4, 8, 16]), _levels(t, t.features, t_stages))
    assert not torch.allclose(loss, wrong)


# --- the official module tables, derived from the probes ---------------------------------------------
def official_tables(teacher: str, student: str):
    """``build_review_kd`` (official ``CIFAR-100/model/reviewkd.py``): in_channels / out_channels shallow
    to deep (embedding last); shapes / out_shapes deep first (embedding first)."""
    if "x4" in student:
        ins, outs, shapes = [64, 128, 256, 256], [64, 128, 256, 256], [1, 8, 16, 32]
        out_shapes = shapes
    elif student.startswith("resnet"):
        ins, outs, shapes = [16, 32, 64, 64], [16, 32, 64, 64], [1, 8, 16, 32, 32]
        out_shapes = shapes
    elif student.startswith("vgg"):
        ins, shapes = [128, 256, 512, 512, 512], [1, 4, 4, 8, 16]
        if "ResNet50" in teacher:
            outs, out_shapes = [256, 512, 1024, 2048, 2048], [1, 4, 8, 16, 32]
        else:
            outs, out_shapes = [128, 256, 512, 512, 512], shapes
    elif student == "MobileNetV2":
        ins, shapes = [12, 16, 48, 160, 1280], [1, 2, 4, 8, 16]
        if "ResNet50" in teacher:
            outs, out_shapes = [256, 512, 1024, 2048, 2048], [1, 4, 8, 16, 32]
        else:
            outs, out_shapes = [128, 256, 512, 512, 512], [1, 4, 4, 8, 16]
    elif student == "ShuffleV1":
        ins, shapes, out_shapes = [240, 480, 960, 960], [1, 4, 8, 16], [1, 8, 16, 32]
        outs = [32, 64, 128, 128] if "wrn" in teacher else [64, 128, 256, 256]
    elif student == "ShuffleV2":
        ins, shapes, out_shapes = [116, 232, 464, 1024], [1, 4, 8, 16], [1, 8, 16, 32]
        outs = [64, 128, 256, 256]
    elif student.startswith("wrn"):
        r = int(student[-1])
        ins, outs, shapes = [16 * r, 32 * r, 64 * r, 64 * r], [32, 64, 128, 128], [1, 8, 16, 32]
        out_shapes = shapes
    else:
        raise AssertionError(student)
    return ins, outs, shapes, out_shapes, min(512, ins[-1])


@functools.lru_cache(maxsize=None)
def _probe(name: str) -> ModelOutput:
    torch.manual_seed(0)
    return probe(create_model(name, num_classes=100), (3, 32, 32), CPU, True)


@pytest.mark.parametrize("pair", load_preset("cifar100")["pairs"])
def test_modules_sized_from_the_probes_reproduce_the_official_tables(pair):
    teacher, student = parse_pair(pair)
    s, t = _probe(student), _probe(teacher)
    m = build_method("reviewkd", BuildContext(s, t, 100, torch.zeros(10, dtype=torch.long)))
    ins, outs, shapes, out_shapes, mid = official_tables(teacher, student)
    n = len(m.abfs)
    assert n == len(ins)
    assert [a.conv1[0].in_channels for a in m.abfs][::-1] == ins
    assert [a.conv2[0].out_channels for a in m.abfs][::-1] == outs
    assert {a.conv1[0].out_channels for a in m.abfs} == {mid}
    student_sizes = [1] + [int(s.features[i_s].shape[2]) for i_s, _ in m.pairs][::-1]
    assert student_sizes == shapes[:n]
    assert [h for h, _ in m.out_sizes] == out_shapes[:n]


# --- cohort == solo -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    return digits_slice()


@pytest.fixture(scope="module")
def teacher():
    return random_teacher()


def test_reviewkd_trains_in_a_cohort_bitwise_equal_to_solo(digits, teacher):
    over = {"reviewkd": {"warmup": 2.0}}
    names = ["reviewkd", "kd", "vanilla"]
    cohort = train([make_run(m, digits, teacher, overrides=over) for m in names], digits, teacher)
    assert all(r.error is None for r in cohort)
    for m, in_cohort in zip(names, cohort):
        solo = train([make_run(m, digits, teacher, overrides=over)], digits, teacher)[0]
        assert_bitwise_equal(in_cohort, solo)
    first, last = cohort[0].history
    assert last["losses"]["reviewkd"] > 0
    # the ramp: 1/2 of weight 5 in the first epoch, all of it in the second
    assert first["weighted_losses"]["reviewkd"] == pytest.approx(2.5 * first["losses"]["reviewkd"], rel=1e-5)
    assert last["weighted_losses"]["reviewkd"] == pytest.approx(5.0 * last["losses"]["reviewkd"], rel=1e-5)
    # the ABFs trained with the student
    fresh = make_run("reviewkd", digits, teacher, overrides=over).method
    assert any(not torch.equal(a, b) for a, b in zip(fresh.parameters(), cohort[0].method.parameters()))
