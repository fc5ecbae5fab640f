"""rkd: Park, Kim, Lu, Cho, "Relational Knowledge Distillation", CVPR 2019.

Distance- and angle-wise relational distillation on the pooled embeddings
(RepDistiller's ``feat[-1]``, ``embedding`` here; wired in ``helper/loops.py``
under ``--distill rkd``). As implemented (RepDistiller ``distiller_zoo/RKD.py``
RKDLoss), with e the (B, D) embeddings flattened, teacher detached:

    d_ij  = sqrt(max(|e_i|^2 + |e_j|^2 - 2 e_i.e_j, 1e-12)) for i != j,
            d_ii = 0                          (RKDLoss.pdist, squared=False)
    d     = d / mean of the entries of d that are > 0 (the off-diagonal pairs;
            for the student the mean is part of the graph)
    rkd_distance = smooth_l1(d_s, d_t), beta 1, mean over the B*B entries

    u_ij  = (e_j - e_i) / max(|e_j - e_i|, 1e-12)    (F.normalize; u_ii = 0)
    a_ijk = u_ij . u_ik                               (B, B, B), via bmm
    rkd_angle = smooth_l1(a_s, a_t), beta 1, mean over the B^3 entries

    loss = gamma * CE(s, y) + beta * (distance_weight * rkd_distance
                                      + angle_weight * rkd_angle)

RepDistiller's RKDLoss returns the single number w_d * dist + w_a * angle
(w_d = 25, w_a = 50). Here the two parts are returned as separate terms,
"rkd_distance" and "rkd_angle", weighted beta * distance_weight and
beta * angle_weight, so they log separately; the weighted sum is the same.
If a batch has no pair at positive distance (a batch of one), RepDistiller's
normalising mean is NaN; here the distance term is 0 for such a batch.

Defaults (RepDistiller):
  distance_weight = 25.0   ``distiller_zoo/RKD.py`` ``RKDLoss(w_d=25)``
  angle_weight = 50.0      ``distiller_zoo/RKD.py`` ``RKDLoss(w_a=50)``
  gamma = 1.0              ``scripts/run_cifar_distill.sh`` RKD row (``-r``
                           left at its default 1; ``-a 0``: no KD term)
  beta = 1.0               ``scripts/run_cifar_distill.sh`` RKD row ``-b 1``
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import BuildContext, Distiller, Range, register_method

_EPS = 1e-12


def pairwise_distances(e: torch.Tensor, eps: float = _EPS) -> torch.Tensor:
    """(B, D) -> (B, B) Euclidean distances, squared form clamped at eps, zero diagonal."""
    sq = (e * e).sum(dim=1)
    d2 = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2.0 * (e @ e.t())).clamp(min=eps)
    off_diag = ~torch.eye(e.shape[0], dtype=torch.bool, device=e.device)
    return d2.sqrt() * off_diag


def _normalised_distances(e: torch.Tensor) -> torch.Tensor | None:
    d = pairwise_distances(e)
    positive = d[d > 0]
    if positive.numel() == 0:
        return None
    return d / positive.mean()


def rkd_distance_loss(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    s, t = s.flatten(1), t.flatten(1)
    d_s, d_t = _normalised_distances(s), _normalised_distances(t)
    if d_s is None or d_t is None:
        return s.sum() * 0.0
    return F.smooth_l1_loss(d_s, d_t, reduction="mean", beta=1.0)


def angle_matrix(e: torch.Tensor) -> torch.Tensor:
    """(B, D) -> (B, B, B): cosines between the unit difference vectors at each vertex."""
    diff = e.unsqueeze(0) - e.unsqueeze(1)  # diff[i, j] = e_j - e_i
    u = F.normalize(diff, p=2.0, dim=2, eps=_EPS)
    return torch.bmm(u, u.transpose(1, 2))


def rkd_angle_loss(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    s, t = s.flatten(1), t.flatten(1)
    return F.smooth_l1_loss(angle_matrix(s), angle_matrix(t), reduction="mean", beta=1.0)


@register_method("rkd")
class RKD(Distiller):
    defaults = {"gamma": 1.0, "beta": 1.0, "distance_weight": 25.0, "angle_weight": 50.0}
    ranges = {"gamma": Range(ge=0), "beta": Range(ge=0), "distance_weight": Range(ge=0), "angle_weight": Range(ge=0)}
    needs_features = True
    couples_batch = True
    coupling_note = "its distances and angles relate the samples of a batch (under DDP: of each rank's slice)"

    def __init__(self, ctx: BuildContext, **hparams):
        super().__init__(ctx, **hparams)
        if ctx.teacher is None:
            raise ValueError("rkd needs a teacher")

    def loss_weights(self):
        return {
            "rkd_distance": self.beta * self.distance_weight,
            "rkd_angle": self.beta * self.angle_weight,
        }

    def losses(self, student, teacher, batch):
        s, t = student.embedding, teacher.embedding.detach()
        return {"rkd_distance": rkd_distance_loss(s, t), "rkd_angle": rkd_angle_loss(s, t)}
