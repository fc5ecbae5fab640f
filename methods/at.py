"""at: Zagoruyko, Komodakis, "Paying More Attention to Attention: Improving the
Performance of Convolutional Neural Networks via Attention Transfer", ICLR 2017.

Activation-based attention transfer on every stage output. As implemented
(RepDistiller ``distiller_zoo/AT.py`` Attention, wired in ``helper/loops.py``
under ``--distill attention`` on ``feat[1:-1]``, i.e. ``features[1:]`` here):

    attention(f) = l2-normalise over the H*W positions of
                   mean over channels of f^p                  (B, H*W)
                   (``F.normalize``, eps 1e-12; p = 2)
    at_layer     = mean over all B*H*W elements of
                   (attention(f_s) - attention(f_t))^2
    at           = sum over the paired stages of at_layer
    loss         = gamma * CE(s, y) + beta * at

Teacher maps are detached. No adapter: channel counts may differ (the
channel mean removes them).

Spatial mismatch, as RepDistiller: the heights are compared; the larger map
(student or teacher) is ``F.adaptive_avg_pool2d``-ed to the smaller one's
size before the attention maps are formed. RepDistiller pools to
``(H_small, H_small)``; we pool to ``(H_small, W_small)``, which is the same
for the square maps of every CIFAR model (and keeps working for non-square
ones).

Different numbers of stages: RepDistiller ``zip``s the two ``feat[1:-1]``
lists, i.e. it pairs the FIRST min(n_s, n_t) stages and ignores the deepest
ones of the longer list. ``stage_align="first"`` (default) does exactly that;
``stage_align="last"`` pairs the last min(n_s, n_t) stages instead (deepest
with deepest). In RepDistiller's own CIFAR-100 pairs the counts always match
(ResNet50 / vgg / MobileNetV2: 4 stages; resnet / wrn / ShuffleV1 / V2: 3), so
both settings give RepDistiller's loss there.

Note: the paper's loss is beta/2 * sum_j || a_s/|a_s| - a_t/|a_t| ||_p per
layer; RepDistiller (and we) use the mean squared difference above with beta
= 1000 instead.

Defaults (RepDistiller):
  p = 2.0          ``distiller_zoo/AT.py`` ``Attention(p=2)``
  gamma = 1.0      ``scripts/run_cifar_distill.sh`` AT row (``-r`` left at its
                   ``train_student.py`` default 1; ``-a 0``: no KD term)
  beta = 1000.0    ``scripts/run_cifar_distill.sh`` AT row ``-b 1000``
  stage_align = "first"  (RepDistiller's ``zip``; ours to make explicit)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import BuildContext, Choice, Distiller, Range, register_method

_ALIGNS = ("first", "last")


def attention_map(f: torch.Tensor, p: float) -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W): channel mean of f^p, l2-normalised per sample."""
    return F.normalize(f.pow(p).mean(dim=1).flatten(1), p=2.0, dim=1)


def at_layer_loss(f_s: torch.Tensor, f_t: torch.Tensor, p: float) -> torch.Tensor:
    """One stage: pool the larger map (by height) to the smaller, then MSE of the attention maps."""
    h_s, h_t = f_s.shape[2], f_t.shape[2]
    if h_s > h_t:
        f_s = F.adaptive_avg_pool2d(f_s, tuple(f_t.shape[2:]))
    elif h_s < h_t:
        f_t = F.adaptive_avg_pool2d(f_t, tuple(f_s.shape[2:]))
    return (attention_map(f_s, p) - attention_map(f_t, p)).pow(2).mean()


def paired_stages(n_s: int, n_t: int, align: str) -> list[tuple[int, int]]:
    """Indices into ``features`` (1-based stages) of the (student, teacher) pairs."""
    n = min(n_s, n_t)
    if align == "first":
        return [(1 + i, 1 + i) for i in range(n)]
    return [(1 + n_s - n + i, 1 + n_t - n + i) for i in range(n)]


@register_method("at")
class AT(Distiller):
    defaults = {"gamma": 1.0, "beta": 1000.0, "p": 2.0, "stage_align": "first"}
    ranges = {"gamma": Range(ge=0), "beta": Range(ge=0), "p": Range(gt=0), "stage_align": Choice(*_ALIGNS)}
    needs_features = True

    def __init__(self, ctx: BuildContext, **hparams):
        super().__init__(ctx, **hparams)
        if ctx.teacher is None:
            raise ValueError("at needs a teacher")
        n_s = len(ctx.student.features) - 1
        n_t = len(ctx.teacher.features) - 1
        if min(n_s, n_t) < 1:
            raise ValueError("at needs at least one stage feature map (features[1:]) in both models")
        self.pairs = paired_stages(n_s, n_t, self.stage_align)

    def loss_weights(self):
        return {"at": self.beta}

    def losses(self, student, teacher, batch):
        total = None
        for i_s, i_t in self.pairs:
            term = at_layer_loss(student.features[i_s], teacher.features[i_t].detach(), self.p)
            total = term if total is None else total + term
        return {"at": total}
