"""dist: Huang, You, Wang, Qian, Xu, "Knowledge Distillation from A Stronger Teacher", NeurIPS 2022.

As the official code computes it (hunto/image_classification_sota, the ``classification``
submodule of hunto/DIST_KD, ``lib/models/losses/dist_kd.py`` class ``DIST``), with
Y_s = softmax(s / tau), Y_t = softmax(t / tau), both (B, C):

    pearson(a, b) = <a - mean(a), b - mean(b)> / (||a - mean(a)|| * ||b - mean(b)|| + 1e-8)
                    (the eps is added to the product of the norms, not to each norm)
    inter = tau^2 * (1 - mean_i pearson(Y_s[i, :], Y_t[i, :]))    rows: one sample's C classes
    intra = tau^2 * (1 - mean_c pearson(Y_s[:, c], Y_t[:, c]))    columns: one class over the batch
    loss  = ori_loss_weight * CE + kd_loss_weight * (beta * inter + gamma * intra)

The tau^2 factor is applied to both terms (``inter_loss = self.tau**2 * ...``).

Defaults, the official CIFAR-100 run: ``configs/strategies/distill/dist_cifar.yaml`` of that
repository (the one DIST_KD's README gives for CIFAR-100) sets ``kd: dist_t4`` (tau = 4, parsed in
``lib/models/losses/kd_loss.py``, which builds ``DIST(beta=1, gamma=1, tau=4)``),
``ori_loss_weight: 1.`` and ``kd_loss_weight: 2.``. Here: T = 4.0, gamma = 1.0 (the CE weight, as
in every kdbench method), beta = 2.0 (the weight of the distillation loss, kd_loss_weight; ``-b`` in
RepDistiller-style scripts), inter = 1.0 and intra = 1.0 (the paper's and the code's beta and gamma,
renamed because kdbench's ``gamma`` is always the CE weight). The same config is used for every
CIFAR-100 pair (no per-pair values); zkxufo/TTM's re-implementation (``distiller_zoo/dist.py``,
``--dist_tau 4``) agrees on the formula and tau.

Terms: ``dist_inter`` (weight beta * inter) and ``dist_intra`` (weight beta * intra), each
including its tau^2.

The intra-class term correlates each class's probabilities across the samples of the batch, so
the loss couples the batch: data-parallel training on slices computes it per slice
(``couples_batch``; not when ``intra`` or ``beta`` is 0). Deviations: none in the loss. The training schedule of ``dist_cifar.yaml``
is not part of the method; the preset's recipe applies.
"""
from __future__ import annotations

import torch

from .base import Distiller, Range, register_method

EPS = 1e-8  # dist_kd.py: cosine_similarity(..., eps=1e-8)


def pearson_rows(a: torch.Tensor, b: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Pearson correlation of each row of ``a`` with the same row of ``b``, eps on the norm product."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def dist_terms(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
               T: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(inter, intra), each ``T^2 * (1 - mean Pearson)``: over samples' rows, over classes' columns."""
    y_s = torch.softmax(student_logits / T, dim=1)
    y_t = torch.softmax(teacher_logits / T, dim=1)
    inter = 1.0 - pearson_rows(y_s, y_t).mean()
    intra = 1.0 - pearson_rows(y_s.t(), y_t.t()).mean()
    return inter * T * T, intra * T * T


@register_method("dist")
class DIST(Distiller):
    defaults = {"T": 4.0, "gamma": 1.0, "beta": 2.0, "inter": 1.0, "intra": 1.0}
    ranges = {"T": Range(gt=0), "gamma": Range(ge=0), "beta": Range(ge=0), "inter": Range(ge=0),
              "intra": Range(ge=0)}
    couples_batch = True
    coupling_note = ("the intra-class term correlates each class's probabilities across the samples "
                     "of the batch (a Pearson correlation over the batch dimension)")

    @classmethod
    def coupling(cls, hparams):
        # with the intra-class term weighted 0, the loss is a per-sample mean
        if hparams["intra"] == 0 or hparams["beta"] == 0:
            return None
        return super().coupling(hparams)

    def loss_weights(self):
        return {"dist_inter": self.beta * self.inter, "dist_intra": self.beta * self.intra}

    def losses(self, student, teacher, batch):
        inter, intra = dist_terms(student.logits, teacher.logits, self.T)
        return {"dist_inter": inter, "dist_intra": intra}
