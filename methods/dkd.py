"""dkd: Zhao, Cui, Song, Qiu, Liang, "Decoupled Knowledge Distillation", CVPR 2022.

As the official code computes it (megvii-research/mdistiller, ``mdistiller/distillers/DKD.py``,
``dkd_loss`` and ``DKD.forward_train``), with p = softmax(logits / T) and y the label:

    TCKD = KL( [p_t[y], 1 - p_t[y]] || [p_s[y], 1 - p_s[y]] )
           (the binary target / non-target split: the student side is ``log`` of the two summed
           probabilities), summed over the two entries and over the batch (``size_average=False``),
           divided by the batch size, times T^2
    NCKD = KL( softmax(t/T over classes != y) || softmax(s/T over classes != y) )
           (the code subtracts 1000 from the target logit after dividing by T, which zeroes the
           target's probability), summed over classes and batch, / batch size, times T^2
    loss = ce_weight * CE(s, y) + min(epoch / warmup, 1) * (alpha * TCKD + beta * NCKD)

``epoch`` is what mdistiller's trainer (``mdistiller/engine/trainer.py``) passes to the loss: the
1-based integer epoch (1 during the first epoch, constant within an epoch), so the weight is
1/20 in the first epoch and 1 from epoch 20 on. kdbench's ``self.progress.epoch`` is the 0-based
fractional epoch ``e + step / steps_per_epoch``; the weight here uses
``floor(progress.epoch) + 1``, which reproduces mdistiller's weight exactly at every step.

Terms: ``dkd_tckd`` (weight ``ramp * alpha``) and ``dkd_nckd`` (weight ``ramp * beta``); CE is the
harness's ``ce`` term, weighted by ``gamma``.

Defaults are mdistiller's ``mdistiller/engine/cfg.py`` ``CFG.DKD``: CE_WEIGHT 1.0 (``gamma``
here, as every kdbench method names its CE weight), ALPHA 1.0, BETA 8.0, T 4.0, WARMUP 20.
mdistiller's CIFAR-100 configs (``configs/cifar100/dkd/*.yaml``) change BETA per pair: 6.0 for
vgg13->vgg8, vgg13->MobileNetV2, wrn_40_2->wrn_16_2, wrn_40_2->wrn_40_1; 2.0 for
resnet56->resnet20 and resnet110->resnet32; the default 8.0 elsewhere. Those values are data in
``kdcore/presets/cifar100.toml`` (``[method_by_pair."T:S".dkd]``), not defaults here.

Deviations (numerically equivalent, not different losses):
  * the non-target softmaxes are taken over the C - 1 non-target columns instead of subtracting
    1000 from the target logit: identical unless |logits / T| approaches 1000, where the
    official "mask" stops being one;
  * the binary student log-probabilities are ``log_softmax`` values combined with ``logsumexp``
    (the official takes ``log`` of summed softmax probabilities): the same numbers, without the
    ``log(0)`` the official code can hit when a probability underflows.
``warmup`` is a float here (mdistiller's is an int); the ramp is the same for integer values.

``dkd+ls`` (logit standardisation, ``methods/ls.py``): both models' logits are z-scored before
``dkd_loss`` (sunshangquan/logit-standardization-KD ``mdistiller/distillers/DKD.py``), T =
ls.base_temp (2), and alpha and beta are MULTIPLIED by ls.kd_weight (9), as their ``tools/train.py``
does (``cfg.DKD.ALPHA = cfg.DKD.ALPHA * args.kd_weight``), so a pair's beta stays that pair's.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .base import Distiller, Range, register_method


def warmup_ramp(epoch: float, warmup: float, base: int = 1) -> float:
    """``min(e / warmup, 1)`` with the integer epoch ``e = floor(epoch) + base`` from kdbench's 0-based
    fractional ``progress.epoch`` (base 1: mdistiller's 1-based epoch; 0: a 0-based trainer's, ReviewKD's
    official script)."""
    return min((math.floor(epoch) + base) / warmup, 1.0)


def dkd_terms(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor,
              T: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(TCKD, NCKD), each a KL summed over classes, averaged over the batch, times T^2."""
    n, c = student_logits.shape
    is_target = F.one_hot(target, c).bool()
    log_s = F.log_softmax(student_logits / T, dim=1)
    log_t = F.log_softmax(teacher_logits / T, dim=1)

    def binary(log_p: torch.Tensor) -> torch.Tensor:  # log [p_y, sum_{j != y} p_j], (n, 2)
        gt = log_p[is_target].view(n, 1)
        rest = torch.logsumexp(log_p[~is_target].view(n, c - 1), dim=1, keepdim=True)
        return torch.cat([gt, rest], dim=1)

    b_s, b_t = binary(log_s), binary(log_t)
    tckd = (b_t.exp() * (b_t - b_s)).sum() / n

    # softmax restricted to the non-target classes: the same as log_softmax of those logits
    nt_s = F.log_softmax(student_logits[~is_target].view(n, c - 1) / T, dim=1)
    nt_t = F.log_softmax(teacher_logits[~is_target].view(n, c - 1) / T, dim=1)
    nckd = (nt_t.exp() * (nt_t - nt_s)).sum() / n
    return tckd * T * T, nckd * T * T


@register_method("dkd")
class DKD(Distiller):
    defaults = {"T": 4.0, "gamma": 1.0, "alpha": 1.0, "beta": 8.0, "warmup": 20.0}
    ranges = {"T": Range(gt=0), "gamma": Range(ge=0), "alpha": Range(ge=0), "beta": Range(ge=0),
              "warmup": Range(gt=0)}
    modifier_rules = {"ls": {"T": "base_temp", "alpha": "times_kd_weight", "beta": "times_kd_weight"}}

    def loss_weights(self):
        ramp = warmup_ramp(self.progress.epoch, self.warmup)
        return {"dkd_tckd": ramp * self.alpha, "dkd_nckd": ramp * self.beta}

    def losses(self, student, teacher, batch):
        tckd, nckd = dkd_terms(self.soft_logits(student.logits), self.soft_logits(teacher.logits), batch.y, self.T)
        return {"dkd_tckd": tckd, "dkd_nckd": nckd}
