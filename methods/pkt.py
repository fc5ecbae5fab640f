"""pkt: Passalis, Tefas, "Learning Deep Representations with Probabilistic
Knowledge Transfer", ECCV 2018.

The cosine similarities between the samples of a batch, turned into a
conditional probability distribution per sample, are matched between student
and teacher by a KL divergence. As implemented (RepDistiller
``distiller_zoo/PKT.py`` PKT.cosine_similarity_loss, the paper authors' code,
wired in ``helper/loops.py`` under ``--distill pkt`` on ``feat[-1]``, the
pooled embedding: ``embedding`` here), with eps = 1e-7 and the teacher
detached:

    x_i  = e_i / (||e_i||_2 + eps)           (each row; the eps is added to the
                                              norm, not clamped); any NaN entry
                                              of x is then set to 0
    K_ij = (x_i . x_j + 1) / 2               (B, B), cosine mapped to [0, 1]
    P_ij = K_ij / sum_j K_ij                 (row-normalised: P_i. sums to 1)
    pkt  = mean over the B*B entries of  P^t_ij * log((P^t_ij + eps) / (P^s_ij + eps))
    loss = gamma * CE(s, y) + beta * pkt

No adapter: the B x B similarity matrices have the same shape whatever the
embedding widths. The diagonal (i = j, K_ii = 1 for non-zero rows) is kept, as
RepDistiller keeps it. The mean is over all B*B entries (RepDistiller's
``torch.mean``), i.e. the per-sample KL divergences summed and divided by B^2.

The NaN-to-zero step is RepDistiller's in-place ``x[x != x] = 0``; here it is
``torch.where``, which gives the same values and the same (zero) gradient at
the replaced entries.

The loss relates the samples of each batch (the similarity distributions), so
``couples_batch`` is declared.

Defaults (RepDistiller):
  gamma = 1.0      ``scripts/run_cifar_distill.sh`` PKT row (``-r`` left at
                   its ``train_student.py`` default 1; ``-a 0``: no KD term)
  beta = 30000.0   ``scripts/run_cifar_distill.sh`` PKT row ``-b 30000``
  eps = 1e-7       ``distiller_zoo/PKT.py`` ``cosine_similarity_loss(eps=0.0000001)``
                   (a constant of the formula, not a hyperparameter)
Deviation (gradient only, at an all-zero embedding row): RepDistiller's
``sqrt(sum(x ** 2))`` has an infinite derivative at 0, so such a row gets a NaN
gradient (its forward value is fine); ``torch.linalg.vector_norm`` is used
here, the same value, with gradient 0 at that point, so a dead sample cannot
put NaN into the student's update. Nothing else differs.
"""
from __future__ import annotations

import torch

from .base import BuildContext, Distiller, Range, register_method

PKT_EPS = 1e-7


def similarity_distribution(e: torch.Tensor, eps: float = PKT_EPS) -> torch.Tensor:
    """(B, D) -> (B, B): row-normalised (cosine + 1) / 2 between the samples."""
    e = e.reshape(e.shape[0], -1)
    x = e / (torch.linalg.vector_norm(e, dim=1, keepdim=True) + eps)
    x = torch.where(torch.isnan(x), torch.zeros_like(x), x)
    k = (x @ x.t() + 1.0) / 2.0
    return k / k.sum(dim=1, keepdim=True)


def pkt_loss(e_s: torch.Tensor, e_t: torch.Tensor, eps: float = PKT_EPS) -> torch.Tensor:
    """Mean over the B*B entries of P_t * log((P_t + eps) / (P_s + eps))."""
    p_s = similarity_distribution(e_s, eps)
    p_t = similarity_distribution(e_t, eps)
    return (p_t * torch.log((p_t + eps) / (p_s + eps))).mean()


@register_method("pkt")
class PKT(Distiller):
    defaults = {"gamma": 1.0, "beta": 30000.0}
    ranges = {"gamma": Range(ge=0), "beta": Range(ge=0)}
    needs_features = True
    couples_batch = True
    coupling_note = "its cosine-similarity distributions relate the samples of a batch (under DDP: of each rank's slice)"

    def __init__(self, ctx: BuildContext, **hparams):
        super().__init__(ctx, **hparams)
        if ctx.teacher is None:
            raise ValueError("pkt needs a teacher")

    def loss_weights(self):
        return {"pkt": self.beta}

    def losses(self, student, teacher, batch):
        return {"pkt": pkt_loss(student.embedding, teacher.embedding.detach())}
