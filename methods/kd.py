"""kd: Hinton, Vinyals, Dean 2015, "Distilling the Knowledge in a Neural Network".

As implemented (RepDistiller ``distiller_zoo/KD.py`` DistillKL):

    kd = KL( softmax(t / T) || softmax(s / T) ), summed over classes,
         averaged over the batch ("batchmean"), times T^2
    loss = gamma * CE(s, y) + alpha * kd

The T^2 factor keeps the gradient scale of the soft term independent of T.
Defaults are RepDistiller's KD row (``train_student.py --distill kd -r 0.1 -a 0.9``):
T = 4, gamma = 0.1, alpha = 0.9. Inside a composition (``crd+kd``) alpha = 1,
as RepDistiller's CRD+KD row (``-a 1``).

``kd+ls`` (logit standardisation, ``methods/ls.py``): both models' logits are z-scored before the
softmax, T = ls.base_temp (2) and alpha = ls.kd_weight (9), as
sunshangquan/logit-standardization-KD ``tools/train.py`` sets ``KD.TEMPERATURE`` and ``KD_WEIGHT``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Distiller, Range, register_method


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float) -> torch.Tensor:
    """KL(p_t || p_s) at temperature T, batch mean, scaled by T^2."""
    log_p_s = F.log_softmax(student_logits / T, dim=1)
    log_p_t = F.log_softmax(teacher_logits / T, dim=1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1).mean()
    return kl * T * T


@register_method("kd")
class KD(Distiller):
    defaults = {"T": 4.0, "gamma": 0.1, "alpha": 0.9}
    ranges = {"T": Range(gt=0), "gamma": Range(ge=0), "alpha": Range(ge=0)}
    combined_defaults = {"alpha": 1.0}
    modifier_rules = {"ls": {"T": "base_temp", "alpha": "kd_weight"}}

    def loss_weights(self):
        return {"kd": self.alpha}

    def losses(self, student, teacher, batch):
        return {"kd": kd_loss(self.soft_logits(student.logits), self.soft_logits(teacher.logits), self.T)}
