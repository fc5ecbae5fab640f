"""nkd: Yang, Zeng, Yuan, Li 2023, "From Knowledge Distillation to Self-Knowledge Distillation:
A Unified Approach with Normalized Loss and Customized Soft Labels" (ICCV), Normalized KD.

As implemented by the authors (yzd-v/cls_KD ``mmcls/models/dis_losses/nkd.py`` NKDLoss,
commit 9466b3f, and ``mmcls/models/classifiers/distiller.py``), for a batch of N
samples with labels y, student logits s, teacher logits t:

    target term     nkd_target    = -1/N sum_n  p_t[n, y_n] * log p_s[n, y_n]
                    p = softmax at temperature 1; p_t[n, y_n] is detached
    non-target      q_t = softmax(t[n, c != y_n] / T),  q_s = softmax(s[n, c != y_n] / T)
                    (the target logit dropped, softmax over the C-1 others: the
                    non-target probabilities at temperature T renormalised to sum 1)
                    nkd_nontarget = -1/N sum_n T^2 sum_{c != y_n} q_t[n, c] log q_s[n, c]
    loss            = gamma * CE(s, y) + nkd_target + nkd_gamma * nkd_nontarget

Both terms are cross-entropies as the code computes them (``-(t_t * s_t).mean()``,
``-(T_i * S_i).sum(1).mean()``), not KL divergences: the non-target term
equals T^2 KL(q_t || q_s) plus the teacher's non-target entropy, which has no
gradient, so the training signal is the same and only the logged value differs.
No eps; log-softmax throughout.

The paper's formula removes the target class from the non-target distributions.
The authors' public code did not between commit e21ad37 ("available for mmcls
1.0", July 2023) and 9466b3f (10 Oct 2023): its mask was
``torch.ones_like(logit_s).scatter_(1, label, 1).bool()`` -- writing 1 into a
tensor of ones, so the mask was all True, ``logit_s[mask].reshape(N, -1)`` kept
all C classes, and the "non-target" term was T^2 times the full-distribution
cross-entropy between softmax(t / T) and softmax(s / T), target included
(cls_KD issue #16, "Implementation of non-target mask"; the author confirmed it
and fixed it to ``scatter_(1, label, 0)``). This module implements the paper's
formula, which is the fixed code's.

Defaults: the CIFAR-100 config ``configs/distillers/cifar100/res34_distill_res18_cifar.py``
(NKDLoss ``temp=3.0, gamma=3.5``; NKDLoss's own defaults ``temp=1.0, gamma=1.5``
are its ImageNet setting): T = 3.0, nkd_gamma = 3.5. The paper's gamma is named
``nkd_gamma`` here because ``gamma`` is the harness's CE weight; gamma = 1.0 is
the student head's ``CrossEntropyLoss(loss_weight=1.0)``
(``configs/_base_/models/resnet18_cifar.py``), which ClassificationDistiller adds
unchanged to ``loss_nkd`` (weight 1: the target term has no weight of its own).
That config distils ResNet34 -> ResNet18, not one of the cifar100 preset's pairs, under mmcls's
recipe (``configs/resnet/resnet18_8xb16_cifar100.py`` and its bases: 200 epochs, 8 x 16 images
per step, SGD from lr 0.1); kdbench trains nkd with the preset's recipe like every other method,
so T and nkd_gamma are that setting's values, not tuned for the preset's pairs or recipe.

Deviations: none in the loss. Labels are class indices (cls_KD also accepts
one-hot / mixed labels and takes their argmax).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Distiller, Range, register_method


def drop_target(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``(N, C)`` logits without each row's target column: ``(N, C - 1)``, the others in their order."""
    n, c = logits.shape
    keep = torch.ones_like(logits, dtype=torch.bool).scatter_(1, target.view(-1, 1), False)
    return logits[keep].view(n, c - 1)


def nkd_terms(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor,
              T: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(target term, non-target term including T^2), each a batch mean, unweighted."""
    y = target.view(-1, 1)
    log_p_s = F.log_softmax(student_logits, dim=1)
    p_t = F.softmax(teacher_logits, dim=1)
    target_term = -(p_t.gather(1, y).detach() * log_p_s.gather(1, y)).mean()
    log_q_s = F.log_softmax(drop_target(student_logits, target) / T, dim=1)
    q_t = F.softmax(drop_target(teacher_logits, target) / T, dim=1)
    nontarget_term = -(q_t * log_q_s).sum(dim=1).mean() * (T * T)
    return target_term, nontarget_term


@register_method("nkd")
class NKD(Distiller):
    defaults = {"T": 3.0, "gamma": 1.0, "nkd_gamma": 3.5}
    ranges = {"T": Range(gt=0), "gamma": Range(ge=0), "nkd_gamma": Range(ge=0)}

    def loss_weights(self):
        return {"nkd_target": 1.0, "nkd_nontarget": self.nkd_gamma}

    def losses(self, student, teacher, batch):
        target_term, nontarget_term = nkd_terms(student.logits, teacher.logits, batch.y, self.T)
        return {"nkd_target": target_term, "nkd_nontarget": nontarget_term}
