"""mlkd: Jin, Wang, Lin, "Multi-Level Logit Distillation", CVPR 2023.

Trains on two views of each batch: the usual crop+flip view (their "weak" one, ``x``) and a strong one
(another crop+flip, then RandAugment(2) and Cutout: ``kdcore/data/augment.py``), so it costs two student
and two teacher forward passes per step. As implemented (Jin-Ying/Multi-Level-Logit-Distillation
``mdistiller/distillers/KD_ours.py``, trained by ``AugTrainer`` in ``mdistiller/engine/trainer.py``;
the same code is ``MLKD.py`` in sunshangquan/logit-standardization-KD), with s_w, s_s, t_w, t_s the
student's and teacher's logits on the weak and strong views, temperatures taus = (T, 3, 5, 2, 6):

    kd(s, t, tau) = batch mean of KL(softmax(z(t)/tau) || softmax(z(s)/tau)) * tau^2     (z: identity,
                    or logit standardisation in ``mlkd+ls``)
    cc(s, t, tau) = sum_ij (P_t^T P_t - P_s^T P_s)_ij^2 / C,   P = softmax(logits / tau)  (B x C)
    bc(s, t, tau) = sum_ij (P_t P_t^T - P_s P_s^T)_ij^2 / B
    conf_b  = max_j softmax(t_w)_bj;     mask_b  = conf_b <= median(conf)        (50th percentile, linear)
    cconf_j = sum_b softmax(t_w)_bj;     cmask_j = cconf_j <= median(cconf)

    loss = gamma * (CE(s_w, y) + CE(s_s, y))
         + alpha * [ mean(mask) * sum_tau kd(s_w, t_w, tau)                                    "kd_weak"
                   + kd(s_s, t_s, T) + kd(s_s, t_s, 3) + kd(s_s, t_s, 5)
                     + kd(s_w, t_w, 2) + kd(s_w, t_w, 6)                                       "kd_strong"
                   + mean(cmask) * sum_tau cc(s_w, t_w, tau)                                   "cc"
                   + mean(mask) * sum_tau bc(s_w, t_w, tau) ]                                  "bc"

Exactly what the official code computes, including what it likely did not intend:
  * The confidence masks keep every sample. ``kd_loss`` and ``bc_loss`` are called with their default
    ``reduce=True`` (the ``reduce=False`` argument is commented out), so each returns a batch scalar;
    ``(scalar * mask).mean()`` is that scalar times the fraction of samples whose teacher confidence
    is at most the median (about 1/2; more with ties). Likewise ``cc`` is scaled by the fraction of
    classes whose summed teacher probability is at most the median. No sample is dropped.
  * In "kd_strong", the tau = 2 and tau = 6 terms use the WEAK logits (s_w, t_w).
  * The strong view's class- and batch-level terms (``loss_cc_strong``, ``loss_bc_strong``) are computed
    but not returned, so they do not train: we do not compute them.
  * The masks read the teacher's softmax at temperature 1 of its raw weak logits (also with ls);
    cc and bc read raw logits (the ls code standardises only ``kd_loss``'s inputs).
Teacher outputs are detached (its forward runs without gradients).

Defaults: T = 4, gamma (``KD.LOSS.CE_WEIGHT``) = 0.1, alpha (``KD.LOSS.KD_WEIGHT``) = 0.9: mdistiller's
``engine/cfg.py`` defaults, which their ``configs/cifar100/ours/*.yaml`` do not change.
``mlkd+ls``: T = ls.base_temp (2), alpha = ls.kd_weight (9), as logit-standardization-KD's
``tools/train.py`` sets them.

Deviations (protocol, not formula): kdbench trains mlkd with the preset's recipe, like every other
method, so its numbers compare with theirs under one protocol. The official configs train it with
lr 0.025 for 240 epochs (the same-style pairs) and lr 0.01 for 480 epochs (vgg13/ResNet50/wrn_40_2 ->
MobileNetV2/ShuffleV1) or 960 epochs (resnet32x4 -> ShuffleV1/V2); ``--set train.lr=0.025`` gives their
same-style recipe. Their strong view applies PIL operations; ours torchvision's tensor versions
(``kdcore/data/augment.py`` says where they differ).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Distiller, Range, register_method
from .kd import kd_loss

EXTRA_TEMPERATURES = (3.0, 5.0, 2.0, 6.0)  # after T, in the official code's order


def class_consistency(s: torch.Tensor, t: torch.Tensor, tau: float) -> torch.Tensor:
    """MLKD ``cc_loss``: squared distance of the class Gram matrices P^T P, summed, / C."""
    p_s, p_t = F.softmax(s / tau, dim=1), F.softmax(t / tau, dim=1)
    return ((p_t.t() @ p_t - p_s.t() @ p_s) ** 2).sum() / s.shape[1]


def batch_consistency(s: torch.Tensor, t: torch.Tensor, tau: float) -> torch.Tensor:
    """MLKD ``bc_loss``: squared distance of the sample Gram matrices P P^T, summed, / B."""
    p_s, p_t = F.softmax(s / tau, dim=1), F.softmax(t / tau, dim=1)
    return ((p_t @ p_t.t() - p_s @ p_s.t()) ** 2).sum() / s.shape[0]


def at_most_median(values: torch.Tensor) -> torch.Tensor:
    """Fraction of ``values`` <= their 50th percentile (numpy's linear interpolation): what MLKD's
    ``(scalar * mask).mean()`` multiplies a scalar loss by. The threshold and the fraction keep float64
    values in float64: a float32 threshold can round below the median sample and drop it (0.7 -> 0.69999999)."""
    values = values if values.dtype == torch.float64 else values.float()  # quantile takes float32/64 only
    return (values <= torch.quantile(values, 0.5)).to(values.dtype).mean()


@register_method("mlkd")
class MLKD(Distiller):
    defaults = {"T": 4.0, "gamma": 0.1, "alpha": 0.9}
    ranges = {"T": Range(gt=0), "gamma": Range(ge=0), "alpha": Range(ge=0)}
    views = ("strong",)
    couples_batch = True
    coupling_note = ("the batch-level term compares the batch's sample Gram matrices, the class-level term its "
                     "class Gram matrices, and the masks take medians over the batch")
    modifier_rules = {"ls": {"T": "base_temp", "alpha": "kd_weight"}}

    def loss_weights(self):
        return {"ce_strong": self.gamma, "kd_weak": self.alpha, "kd_strong": self.alpha,
                "cc": self.alpha, "bc": self.alpha}

    def losses(self, student, teacher, batch):
        strong = batch.views["strong"]
        s_w, t_w = student.logits, teacher.logits
        s_s, t_s = strong.student.logits, strong.teacher.logits
        p_tw = F.softmax(t_w.detach(), dim=1)
        keep = at_most_median(p_tw.max(dim=1).values)
        keep_class = at_most_median(p_tw.sum(dim=0))
        taus = (self.T, *EXTRA_TEMPERATURES)
        zs_w, zt_w = self.soft_logits(s_w), self.soft_logits(t_w)
        zs_s, zt_s = self.soft_logits(s_s), self.soft_logits(t_s)
        kd_weak = sum(kd_loss(zs_w, zt_w, tau) for tau in taus) * keep
        kd_strong = (kd_loss(zs_s, zt_s, self.T) + kd_loss(zs_s, zt_s, 3.0) + kd_loss(zs_s, zt_s, 5.0)
                     + kd_loss(zs_w, zt_w, 2.0) + kd_loss(zs_w, zt_w, 6.0))
        cc = sum(class_consistency(s_w, t_w, tau) for tau in taus) * keep_class
        bc = sum(batch_consistency(s_w, t_w, tau) for tau in taus) * keep
        return {"ce_strong": F.cross_entropy(s_s, batch.y), "kd_weak": kd_weak, "kd_strong": kd_strong,
                "cc": cc, "bc": bc}
