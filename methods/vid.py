"""vid: Ahn, Hu, Damianou, Lawrence, Dai, "Variational Information
Distillation for Knowledge Transfer", CVPR 2019.

Each stage output of the teacher is modelled as a Gaussian whose mean is
regressed from the student's stage output and whose per-channel variance is
learned; the student minimises the negative log-likelihood (a variational
lower bound on the mutual information). As implemented (RepDistiller
``distiller_zoo/VID.py`` VIDLoss, the paper authors' code, wired in
``train_student.py`` / ``helper/loops.py`` under ``--distill vid`` on
``feat[1:-1]``, the stage outputs post-activation: ``features[1:]`` here),
per paired stage, teacher map t detached:

    pool the larger map (by height) to the smaller one's size
                                 (``F.adaptive_avg_pool2d``, BEFORE the regressor)
    mu    = conv1x1(C_t -> C_t)(ReLU(conv1x1(C_t -> C_t)(ReLU(conv1x1(C_s -> C_t)(s)))))
            (three bias-free 1x1 convs, PyTorch's default init; the middle width
            is the teacher's channel count: ``VIDLoss(s, t, t)``)
    var_c = softplus(log_scale_c) + eps          per teacher channel c
    vid_layer = mean over all B*C_t*H*W elements of
                0.5 * ((mu - t)^2 / var_c + log var_c)
    vid   = sum over the paired stages of vid_layer
    loss  = gamma * CE(s, y) + beta * vid

``log_scale`` starts at log(exp(init_pred_var - eps) - 1) in every channel, so
the initial variance is exactly init_pred_var. The regressors and log_scales
are owned by this method, so they join the student's optimizer (with its
weight decay, as RepDistiller's ``trainable_list.append(criterion_kd)``). They
contain no BatchNorm or dropout: train/eval mode does not change them. They
are sized from the probe's channel counts (``train_student.py``:
``s_n = [f.shape[1] for f in feat_s[1:-1]]``, likewise ``t_n``).

Different numbers of stages: RepDistiller ``zip``s the two ``feat[1:-1]``
lists (the first min(n_s, n_t) stages, one VIDLoss per pair);
``stage_align="first"`` (default) does that, ``"last"`` pairs the deepest
stages instead (as ``at``). Spatial mismatch: RepDistiller pools to
``(H_small, H_small)``; we pool to ``(H_small, W_small)``, the same for the
square maps of every CIFAR model (as ``at``).

Deviation (numerical only): RepDistiller computes the softplus as
``log(1 + exp(x))``, which overflows to inf for x > 88; ``F.softplus`` (which
returns x itself above 20, where the two agree to float32 precision) is used
here. The initial log_scale uses ``log(expm1(v - eps))``, equal to
RepDistiller's numpy ``log(exp(v - eps) - 1)`` to float rounding.

Defaults (RepDistiller):
  gamma = 1.0           ``scripts/run_cifar_distill.sh`` VID row (``-r`` left at
                        its ``train_student.py`` default 1; ``-a 0``: no KD term)
  beta = 1.0            ``scripts/run_cifar_distill.sh`` VID row ``-b 1``
  init_pred_var = 5.0   ``distiller_zoo/VID.py`` ``VIDLoss(init_pred_var=5.0)``
  eps = 1e-5            ``distiller_zoo/VID.py`` ``VIDLoss(eps=1e-5)``
  stage_align = "first" (RepDistiller's ``zip``; ours to make explicit)
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .at import paired_stages
from .base import BuildContext, Choice, Distiller, HyperparameterError, Range, register_method
from .nst import pool_to_smaller

_ALIGNS = ("first", "last")


class VIDLayer(nn.Module):
    """One stage's regressor (three bias-free 1x1 convs) and learned per-channel variance."""

    def __init__(self, s_channels: int, t_channels: int, init_pred_var: float, eps: float):
        super().__init__()
        self.regressor = nn.Sequential(
            nn.Conv2d(s_channels, t_channels, kernel_size=1, bias=False),
            nn.ReLU(),
            nn.Conv2d(t_channels, t_channels, kernel_size=1, bias=False),
            nn.ReLU(),
            nn.Conv2d(t_channels, t_channels, kernel_size=1, bias=False),
        )
        init = math.log(math.expm1(init_pred_var - eps))
        self.log_scale = nn.Parameter(torch.full((t_channels,), init))
        self.eps = eps

    def variance(self) -> torch.Tensor:
        return F.softplus(self.log_scale) + self.eps

    def forward(self, f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
        f_s, f_t = pool_to_smaller(f_s, f_t)
        mu = self.regressor(f_s)
        var = self.variance().view(1, -1, 1, 1)
        return (0.5 * ((mu - f_t).pow(2) / var + var.log())).mean()


@register_method("vid")
class VID(Distiller):
    defaults = {"gamma": 1.0, "beta": 1.0, "init_pred_var": 5.0, "eps": 1e-5, "stage_align": "first"}
    ranges = {"gamma": Range(ge=0), "beta": Range(ge=0), "init_pred_var": Range(gt=0), "eps": Range(gt=0),
              "stage_align": Choice(*_ALIGNS)}
    needs_features = True

    @classmethod
    def check_hparams(cls, hparams):
        super().check_hparams(hparams)
        if hparams["init_pred_var"] <= hparams["eps"]:
            raise HyperparameterError(
                f"vid.init_pred_var must be > vid.eps (the variance is softplus(log_scale) + eps), "
                f"got {hparams['init_pred_var']!r} <= {hparams['eps']!r}")

    def __init__(self, ctx: BuildContext, **hparams):
        super().__init__(ctx, **hparams)
        if ctx.teacher is None:
            raise ValueError("vid needs a teacher")
        n_s = len(ctx.student.features) - 1
        n_t = len(ctx.teacher.features) - 1
        if min(n_s, n_t) < 1:
            raise ValueError("vid needs at least one stage feature map (features[1:]) in both models")
        self.pairs = paired_stages(n_s, n_t, self.stage_align)
        self.layers = nn.ModuleList(
            VIDLayer(int(ctx.student.features[i_s].shape[1]), int(ctx.teacher.features[i_t].shape[1]),
                     self.init_pred_var, self.eps)
            for i_s, i_t in self.pairs
        )

    def loss_weights(self):
        return {"vid": self.beta}

    def losses(self, student, teacher, batch):
        total = None
        for (i_s, i_t), layer in zip(self.pairs, self.layers):
            term = layer(student.features[i_s], teacher.features[i_t].detach())
            total = term if total is None else total + term
        return {"vid": total}
