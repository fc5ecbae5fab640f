"""kd_warmup: Hinton et al.'s KD whose weight ramps up linearly over the first epochs (DKD-style).

Zhao et al., "Decoupled Knowledge Distillation" (CVPR 2022) warm their loss
weight up as ``min(epoch / warmup, 1)``; here the same ramp on the KD term:

    kd   = KL( softmax(t / T) || softmax(s / T) ) * T^2, batch mean
    loss = gamma * CE(s, y) + alpha * min(epoch / warmup, 1) * kd

``epoch`` is fractional (``self.progress.epoch``: completed epochs plus the
fraction of the current one), so the ramp is smooth within an epoch.
Defaults: T = 4.0, gamma = 1.0, alpha = 1.0, warmup = 20.0 epochs (DKD's).
"""
from __future__ import annotations

from methods import Distiller, Range, register_method
from methods.kd import kd_loss


@register_method("kd_warmup")
class KDWarmup(Distiller):
    # every hyperparameter with its default (--set kd_warmup.warmup=10 works) and its valid range,
    # checked before any teacher trains (--set kd_warmup.T=-1: exit 2, "kd_warmup.T must be > 0, got -1.0")
    defaults = {"T": 4.0, "gamma": 1.0, "alpha": 1.0, "warmup": 20.0}
    ranges = {"T": Range(gt=0), "gamma": Range(ge=0), "alpha": Range(ge=0), "warmup": Range(gt=0)}

    def loss_weights(self):  # weight of each term (CE is weighted by gamma); read every step
        ramp = min(self.progress.epoch / self.warmup, 1.0)
        return {"kd_warmup": self.alpha * ramp}

    def losses(self, student, teacher, batch):  # ModelOutputs; unweighted named terms
        return {"kd_warmup": kd_loss(student.logits, teacher.logits, self.T)}
