"""ofd: Heo, Kim, Yun, Park, Kwak, Choi, "A Comprehensive Overhaul of Feature
Distillation", ICCV 2019.

The student's pre-ReLU stage outputs, mapped by a trainable connector onto the
teacher's channels, are pulled towards the teacher's pre-ReLU stage outputs
clamped from below by a per-channel "margin", with a partial L2 that ignores
the positions where both the target is negative and the student is already
below it. As the official code computes it (clovaai/overhaul-distillation
``CIFAR-100/distiller.py`` and ``train_with_distillation.py``), for the paired
stages i = 0 .. n-1 (shallowest first), with s_i the student's pre-ReLU map
and t_i the teacher's (detached):

    margin_c  = m - s * phi(m / s) / Phi(-m / s)   if Phi(-m / s) > 0.001
              = -3 s                               otherwise
                (s = |gamma_c|, m = beta_c of the BN before the stage's final
                ReLU: E[x | x < 0] for x ~ N(m, s^2), the expectation of the
                teacher's response where the ReLU zeroes it; phi, Phi the
                standard normal density and distribution function)
    r_i       = BN(conv1x1(s_i))                       the connector, C_s -> C_t
    T_i       = max(t_i, margin)                       per channel
    d_i       = sum over b, c, h, w of (r_i - T_i)^2 * [(r_i > T_i) or (T_i > 0)]
    ofd       = sum_i d_i / 2^(n-i-1) / B              (the deepest stage weighs 1)
    loss      = gamma * CE(s, y) + beta * ofd

clovaai's training script adds ``loss_distill.sum() / batch_size / 1000`` to the
CE: ``ofd`` is its sum divided by the batch size, ``beta`` its 1/1000.
mdistiller (``mdistiller/distillers/OFD.py``, ``configs/cifar100/ofd.yaml``)
computes the same value in another form: its three masked terms
((r - margin)^2 where r > margin >= t, (r - t)^2 where r > t > margin and
t <= 0, (r - t)^2 where t > 0) equal the clamped form above element by
element (margin <= 0), and ``.mean(dim=0).sum()`` is the sum over the batch
divided by B; its ``FEAT_WEIGHT`` is 0.001 and ``CE_WEIGHT`` 1.0.

Which BN: the margin of stage i comes from the teacher's BN right before the
ReLU that produces its stage output (``KDModel.preact_bns()``, as the
references' ``get_bn_before_relu``): the last block's bn2 (bn3 in a bottleneck)
of a ResNet stage, whose output is summed with the shortcut into the pre-ReLU
map; the next block's bn1 (and the head's bn1) of a WRN; each VGG block's last
BN. Only its affine parameters enter (batch-normalised, its output is modelled
as N(beta, gamma^2)), as both references compute it. The margins are copied
into buffers at build time (``margin0``, ``margin1``, ...: one per paired
stage, the teacher's channel count); the teacher model is not kept.

Connector (both references): ``Conv2d(C_s, C_t, 1, bias=False)`` with weights
~ N(0, 2 / C_t) (``n = k * k * out_channels``), then ``BatchNorm2d(C_t)`` with
weight 1 and bias 0. It is owned by this method and joins the student's
optimizer (clovaai: ``d_net.Connectors.parameters()`` in the SGD groups).

Which stages: all stage outputs, ``preact_features[1:]`` (clovaai:
``extract_feature`` returns the 3 stage outputs of its WRN / ResNet / PyramidNet;
mdistiller: ``preact_feats[1:]``). Different numbers of stages: clovaai's
settings always have equal counts and it ``zip``s the lists; mdistiller keeps
the last min(n_s, n_t) of each (``_align_list``); ``stage_align="last"``
(default) does that, ``"first"`` pairs the shallowest. Each paired stage here
takes the margin of its own teacher stage's BN; mdistiller does not align its
margin list (one per teacher BN, read as ``self.margins[i]`` for the i-th
aligned pair), so with more teacher than student stages it would apply the
shallowest teacher BNs' margins to the deepest teacher maps (a channel-count
mismatch in practice; no cifar100 pair of kdbench has unequal counts).
Different spatial sizes
(cross-architecture pairs): mdistiller average-pools the teacher's map to the
student's size (``F.adaptive_avg_pool2d(feature_teacher[i], s.shape[-2:])``)
before the loss; so does this method (clovaai never meets the case).

We follow the official clovaai CIFAR-100 code (the paper's authors) for the
formula, reductions and weights; mdistiller agrees with it on all of them, and
supplies the stage alignment and the pooling for the pairs clovaai's settings
do not cover.

Deviations:
  * The teacher runs in eval mode (BN on running statistics), frozen and shared
    by the cohort. Both references run the teacher in train mode during
    distillation: clovaai calls ``d_net.t_net.train()``, and mdistiller's
    ``OFD.train`` overrides the base class's ``self.teacher.eval()``, so the
    teacher's BNs use (and update) batch statistics there.
  * A teacher BN channel with weight exactly 0 makes the references divide by
    zero; here its margin is the limit of their rule, min(beta, 0).
  * The margins are computed in float64 (``torch.special.ndtr``) and stored in
    float32; the references use Python floats and scipy's ``norm.cdf``, then
    ``torch.FloatTensor``.

Defaults:
  gamma = 1.0           clovaai ``train_with_distillation.py`` ``loss_CE + ...``
                        (weight 1); mdistiller ``cfg.py`` ``OFD.LOSS.CE_WEIGHT = 1.0``
  beta = 0.001          clovaai ``loss_distill.sum() / batch_size / 1000``;
                        mdistiller ``cfg.py`` ``OFD.LOSS.FEAT_WEIGHT = 0.001``
                        (``configs/cifar100/ofd.yaml`` keeps both)
  stage_align = "last"  mdistiller ``OFD._align_list`` (clovaai: equal counts)
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .at import paired_stages
from .base import BuildContext, Choice, Distiller, PairNotSupported, Range, register_method

_ALIGNS = ("last", "first")
_CDF_MIN = 0.001  # below this mass of the negative part the margin is -3 s (both references)


def bn_margin(weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Per-channel OFD margin from a BN's affine parameters: E[x | x < 0] for x ~ N(bias, weight^2).

    Computed in float64, returned in float32 (as the references' ``torch.FloatTensor``).
    """
    s = weight.detach().double().abs()
    m = bias.detach().double()
    safe_s = torch.where(s > 0, s, torch.ones_like(s))
    z = m / safe_s
    cdf = torch.special.ndtr(-z)
    pdf = torch.exp(-z * z / 2) / math.sqrt(2 * math.pi)
    expect = m - safe_s * pdf / torch.where(cdf > 0, cdf, torch.ones_like(cdf))
    margin = torch.where(cdf > _CDF_MIN, expect, -3 * s)
    margin = torch.where(s > 0, margin, m.clamp(max=0))  # zero weight: the limit of the rule
    return margin.float()


def ofd_stage_loss(r: torch.Tensor, t: torch.Tensor, margin: torch.Tensor) -> torch.Tensor:
    """Masked squared error summed over every element (clovaai's ``distillation_loss``), not yet / B."""
    target = torch.max(t, margin.view(1, -1, 1, 1).to(t.dtype))
    mask = (r > target) | (target > 0)
    return ((r - target).pow(2) * mask.to(r.dtype)).sum()


def build_connector(s_channels: int, t_channels: int) -> nn.Sequential:
    """conv1x1 (no bias, N(0, 2 / C_t)) + BN (weight 1, bias 0), as both references' connector."""
    conv = nn.Conv2d(s_channels, t_channels, kernel_size=1, bias=False)
    nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / t_channels))
    bn = nn.BatchNorm2d(t_channels)
    nn.init.ones_(bn.weight)
    nn.init.zeros_(bn.bias)
    return nn.Sequential(conv, bn)


@register_method("ofd")
class OFD(Distiller):
    defaults = {"gamma": 1.0, "beta": 0.001, "stage_align": "last"}
    ranges = {"gamma": Range(ge=0), "beta": Range(ge=0), "stage_align": Choice(*_ALIGNS)}
    needs_features = True
    needs_preact = True

    def __init__(self, ctx: BuildContext, **hparams):
        super().__init__(ctx, **hparams)
        if ctx.teacher is None:
            raise ValueError("ofd needs a teacher")
        if ctx.teacher_model is None:
            raise ValueError("ofd needs the teacher model at build time (its margins come from the BN before "
                             "each stage's final ReLU): BuildContext.teacher_model is None")
        s_pre, t_pre = ctx.student.preact_features, ctx.teacher.preact_features
        if s_pre is None or t_pre is None:
            raise ValueError("ofd needs the probe outputs' preact_features (probe with preact=True)")
        n_s, n_t = len(s_pre) - 1, len(t_pre) - 1
        if min(n_s, n_t) < 1:
            raise ValueError("ofd needs at least one stage feature map (preact_features[1:]) in both models")
        try:
            bns = list(ctx.teacher_model.preact_bns())
        except (NotImplementedError, AttributeError) as e:
            # a teacher with no BN before its stages' final ReLU (the seed paper's, ShuffleNets): overhaul's
            # get_bn_before_relu has no answer either, so the pair is "n/a" in the table, as FSP's unequal channels
            raise PairNotSupported(f"ofd cannot use teacher {type(ctx.teacher_model).__name__} (its margins need "
                             f"the BN before each stage's final ReLU): {e}") from None
        if len(bns) != n_t:
            raise ValueError(f"ofd: teacher {type(ctx.teacher_model).__name__} declares {len(bns)} preact BNs "
                             f"for {n_t} stages")
        self.pairs = paired_stages(n_s, n_t, self.stage_align)
        connectors = []
        for k, (i_s, i_t) in enumerate(self.pairs):
            for name, i, f in (("student", i_s, s_pre[i_s]), ("teacher", i_t, t_pre[i_t])):
                if f.dim() != 4:
                    raise ValueError(f"ofd needs 4-D maps; the {name}'s preact_features[{i}] is {tuple(f.shape)}")
            c_s, c_t = int(s_pre[i_s].shape[1]), int(t_pre[i_t].shape[1])
            bn = bns[i_t - 1]
            if bn.num_features != c_t:
                raise ValueError(f"ofd: the teacher's preact BN of stage {i_t} has {bn.num_features} channels, "
                                 f"its map {c_t}")
            self.register_buffer(f"margin{k}", bn_margin(bn.weight, bn.bias))
            connectors.append(build_connector(c_s, c_t))
        self.connectors = nn.ModuleList(connectors)

    def margins(self) -> list[torch.Tensor]:
        return [getattr(self, f"margin{k}") for k in range(len(self.pairs))]

    def loss_weights(self):
        return {"ofd": self.beta}

    def losses(self, student, teacher, batch):
        n = len(self.pairs)
        total = None
        for k, ((i_s, i_t), connector, margin) in enumerate(zip(self.pairs, self.connectors, self.margins())):
            r = connector(student.preact_features[i_s])
            t = teacher.preact_features[i_t].detach()
            if t.shape[-2:] != r.shape[-2:]:  # mdistiller: the teacher pooled to the student's size
                t = F.adaptive_avg_pool2d(t, tuple(r.shape[-2:]))
            term = ofd_stage_loss(r, t, margin) / 2 ** (n - k - 1)
            total = term if total is None else total + term
        return {"ofd": total / student.preact_features[self.pairs[0][0]].shape[0]}
