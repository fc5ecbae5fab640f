"""nst: Huang, Wang, "Like What You Like: Knowledge Distill via Neuron
Selectivity Transfer", arXiv:1707.01219, 2017.

The distributions of neuron (channel) activations over the spatial positions
of each stage output are matched by a squared Maximum Mean Discrepancy with a
polynomial kernel. As implemented (RepDistiller ``distiller_zoo/NST.py``
NSTLoss, ``full_loss = True``, wired in ``helper/loops.py`` under
``--distill nst`` on ``feat[1:-1]``, the stage outputs post-activation:
``features[1:]`` here), per paired stage, teacher detached:

    pool the larger map (by height) to the smaller one's size
                                        (``F.adaptive_avg_pool2d``)
    f  -> (B, C, H*W), each channel's row l2-normalised over the H*W positions
          (``F.normalize`` on dim 2, eps 1e-12)
    k(a, b)[n, i, j] = (a[n, j] . b[n, i])^2       polynomial kernel, d = 2,
                                                     c = 0; (B, C_b, C_a)
    nst_layer = mean k(f_t, f_t) + mean k(f_s, f_s) - 2 mean k(f_s, f_t)
                (each mean over all its B*C*C' entries; the first term is a
                constant, detached: it changes the value, not the gradient)
    nst  = sum over the paired stages of nst_layer
    loss = gamma * CE(s, y) + beta * nst

No adapter: channel counts may differ (the kernel compares channels of the two
models pairwise).

Spatial mismatch, as RepDistiller: the heights are compared and the larger map
is pooled. RepDistiller pools to ``(H_small, H_small)``; we pool to
``(H_small, W_small)``, the same for the square maps of every CIFAR model (as
``at``). Different numbers of stages: RepDistiller ``zip``s the two
``feat[1:-1]`` lists (the first min(n_s, n_t) stages); ``stage_align="first"``
(default) does that, ``"last"`` pairs the deepest stages instead (as ``at``).

Defaults (RepDistiller):
  gamma = 1.0    ``scripts/run_cifar_distill.sh`` NST row (``-r`` left at its
                 ``train_student.py`` default 1; ``-a 0``: no KD term)
  beta = 50.0    ``scripts/run_cifar_distill.sh`` NST row ``-b 50``
  stage_align = "first"  (RepDistiller's ``zip``; ours to make explicit)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .at import paired_stages
from .base import BuildContext, Choice, Distiller, Range, register_method

_ALIGNS = ("first", "last")


def pool_to_smaller(f_s: torch.Tensor, f_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Adaptive-average-pool the map with the larger height to the other's (H, W)."""
    h_s, h_t = f_s.shape[2], f_t.shape[2]
    if h_s > h_t:
        f_s = F.adaptive_avg_pool2d(f_s, tuple(f_t.shape[2:]))
    elif h_s < h_t:
        f_t = F.adaptive_avg_pool2d(f_t, tuple(f_s.shape[2:]))
    return f_s, f_t


def poly_kernel_mean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean over (n, i, j) of (a[n, i] . b[n, j])^2 for (B, C_a, N) and (B, C_b, N)."""
    return torch.bmm(a, b.transpose(1, 2)).pow(2).mean()


def nst_layer_loss(f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
    f_s, f_t = pool_to_smaller(f_s, f_t)
    f_s = F.normalize(f_s.flatten(2), p=2.0, dim=2, eps=1e-12)
    f_t = F.normalize(f_t.flatten(2), p=2.0, dim=2, eps=1e-12)
    return (poly_kernel_mean(f_t, f_t).detach() + poly_kernel_mean(f_s, f_s)
            - 2.0 * poly_kernel_mean(f_s, f_t))


@register_method("nst")
class NST(Distiller):
    defaults = {"gamma": 1.0, "beta": 50.0, "stage_align": "first"}
    ranges = {"gamma": Range(ge=0), "beta": Range(ge=0), "stage_align": Choice(*_ALIGNS)}
    needs_features = True

    def __init__(self, ctx: BuildContext, **hparams):
        super().__init__(ctx, **hparams)
        if ctx.teacher is None:
            raise ValueError("nst needs a teacher")
        n_s = len(ctx.student.features) - 1
        n_t = len(ctx.teacher.features) - 1
        if min(n_s, n_t) < 1:
            raise ValueError("nst needs at least one stage feature map (features[1:]) in both models")
        self.pairs = paired_stages(n_s, n_t, self.stage_align)

    def loss_weights(self):
        return {"nst": self.beta}

    def losses(self, student, teacher, batch):
        total = None
        for i_s, i_t in self.pairs:
            term = nst_layer_loss(student.features[i_s], teacher.features[i_t].detach())
            total = term if total is None else total + term
        return {"nst": total}
