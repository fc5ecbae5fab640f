"""sp: Tung, Mori, "Similarity-Preserving Knowledge Distillation", ICCV 2019.

The student is trained so that the batch's pairwise similarities (Gram matrix)
of its last stage output match the teacher's. As implemented (RepDistiller
``distiller_zoo/SP.py`` Similarity.similarity_loss, wired in
``helper/loops.py`` under ``--distill similarity`` on ``[feat[-2]]``, the
last stage output, post-activation: ``features[-1]`` here):

    F_s = features_s[-1] flattened to (B, C_s*H_s*W_s); F_t likewise (detached)
    G   = F F^T                                         (B, B)
    Q   = G with each ROW l2-normalised                 (``F.normalize`` on
          dim 1, eps 1e-12: Q_ij = G_ij / max(||G_i.||, 1e-12))
    sp  = sum over the B*B entries of (Q_t - Q_s)^2 / B^2
    loss = gamma * CE(s, y) + beta * sp

No adapter: the B x B Gram matrices have the same shape whatever the channel
counts and map sizes of the two models. RepDistiller's Similarity returns a
list with one loss per pair of maps and the loop sums it; with the single
pair ``[feat[-2]]`` that is the one term "sp" here. (The paper writes the
normalised-Gram loss of each layer as 1/B^2 * ||Q_t - Q_s||_F^2, the same.)

The loss relates the samples of each batch (the Gram matrix), so
``couples_batch`` is declared.

Defaults (RepDistiller):
  gamma = 1.0     ``scripts/run_cifar_distill.sh`` SP row (``-r`` left at its
                  ``train_student.py`` default 1; ``-a 0``: no KD term)
  beta = 3000.0   ``scripts/run_cifar_distill.sh`` SP row ``-b 3000``
No deviation from RepDistiller's computation.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import BuildContext, Distiller, Range, register_method


def normalised_gram(f: torch.Tensor) -> torch.Tensor:
    """(B, ...) -> (B, B): Gram matrix of the flattened samples, each row l2-normalised (eps 1e-12)."""
    flat = f.reshape(f.shape[0], -1)
    return F.normalize(flat @ flat.t(), p=2.0, dim=1, eps=1e-12)


def sp_loss(f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
    """Squared Frobenius distance of the normalised Gram matrices, divided by B^2."""
    b = f_s.shape[0]
    diff = normalised_gram(f_t) - normalised_gram(f_s)
    return diff.pow(2).sum() / (b * b)


@register_method("sp")
class SP(Distiller):
    defaults = {"gamma": 1.0, "beta": 3000.0}
    ranges = {"gamma": Range(ge=0), "beta": Range(ge=0)}
    needs_features = True
    couples_batch = True
    coupling_note = "its B x B Gram matrix relates the samples of a batch (under DDP: of each rank's slice)"

    def __init__(self, ctx: BuildContext, **hparams):
        super().__init__(ctx, **hparams)
        if ctx.teacher is None:
            raise ValueError("sp needs a teacher")
        if len(ctx.student.features) < 1 or len(ctx.teacher.features) < 1:
            raise ValueError("sp needs at least one feature map (features[-1]) in both models")

    def loss_weights(self):
        return {"sp": self.beta}

    def losses(self, student, teacher, batch):
        return {"sp": sp_loss(student.features[-1], teacher.features[-1].detach())}
