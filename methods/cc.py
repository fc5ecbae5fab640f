"""cc: Peng, Jin, Liu, Li, Wu, Liu, Zhou, Zhang, "Correlation Congruence for
Knowledge Distillation", ICCV 2019.

Both pooled embeddings (RepDistiller's ``feat[-1]``, ``embedding`` here) are
projected by a trainable linear layer each to ``feat_dim`` dimensions, and the
student is pulled towards the teacher through a correlation of consecutive
samples. As implemented (RepDistiller ``distiller_zoo/CC.py`` Correlation, the
code the paper's authors shared, ``models/util.py`` LinearEmbed, wired in
``train_student.py`` / ``helper/loops.py`` under ``--distill correlation``):

    z_s = W_s e_s + b_s,   z_t = W_t e_t + b_t          (B, feat_dim) each
          e_t detached; the teacher-side projection (W_t, b_t) is trainable
          and receives the gradient of this loss (RepDistiller puts both
          ``embed_s`` and ``embed_t`` in ``trainable_list``); no normalisation
    D   = |z_s - z_t|                                    (B, feat_dim)
    cc  = mean over i = 0..B-2 of  sum over d of  D[i, d] * D[i+1, d]
    loss = gamma * CE(s, y) + beta * cc

so each sample's absolute embedding error is correlated with that of the next
sample in the batch order. The paper describes a correlation matrix built with
a (Taylor-expanded Gaussian RBF) kernel over the batch; RepDistiller's
Correlation, and this method, compute the term above instead (RepDistiller's
file keeps its own earlier normalised-Gram version commented out).

Both projections are ``nn.Linear`` with PyTorch's default initialisation (as
LinearEmbed), owned by this method, so their parameters join the student's
optimizer (with its weight decay, as ``trainable_list`` in RepDistiller).

The loss relates sample i to sample i+1 of each batch, so ``couples_batch`` is
declared. Deviation: for a batch of one sample RepDistiller's mean over an
empty set is NaN; here the term is 0 for such a batch.

Defaults (RepDistiller):
  feat_dim = 128  ``train_student.py`` ``--feat_dim`` default (LinearEmbed's
                  ``dim_out``)
  gamma = 1.0     ``scripts/run_cifar_distill.sh`` CC row (``-r`` left at its
                  ``train_student.py`` default 1; ``-a 0``: no KD term)
  beta = 0.02     ``scripts/run_cifar_distill.sh`` CC row ``-b 0.02``
"""
from __future__ import annotations

import torch
from torch import nn

from .base import BuildContext, Distiller, Range, register_method


def cc_loss(z_s: torch.Tensor, z_t: torch.Tensor) -> torch.Tensor:
    """Mean over consecutive sample pairs (i, i+1) of the dot product of their absolute differences."""
    delta = (z_s - z_t).abs()
    if delta.shape[0] < 2:
        return delta.sum() * 0.0
    return (delta[:-1] * delta[1:]).sum(dim=1).mean()


@register_method("cc")
class CC(Distiller):
    defaults = {"gamma": 1.0, "beta": 0.02, "feat_dim": 128}
    ranges = {"gamma": Range(ge=0), "beta": Range(ge=0), "feat_dim": Range(ge=1)}
    needs_features = True
    couples_batch = True
    coupling_note = "it multiplies the errors of consecutive samples i, i+1 of a batch (under DDP: of each rank's slice)"

    def __init__(self, ctx: BuildContext, **hparams):
        super().__init__(ctx, **hparams)
        if ctx.teacher is None:
            raise ValueError("cc needs a teacher")
        d_s = int(ctx.student.embedding.flatten(1).shape[1])
        d_t = int(ctx.teacher.embedding.flatten(1).shape[1])
        self.embed_s = nn.Linear(d_s, self.feat_dim)
        self.embed_t = nn.Linear(d_t, self.feat_dim)

    def loss_weights(self):
        return {"cc": self.beta}

    def losses(self, student, teacher, batch):
        z_s = self.embed_s(student.embedding.flatten(1))
        z_t = self.embed_t(teacher.embedding.detach().flatten(1))
        return {"cc": cc_loss(z_s, z_t)}
