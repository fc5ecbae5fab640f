"""ctkd: Li, Li, Yang, Cheng, Zhang, Yang 2023, "Curriculum Temperature for Knowledge Distillation" (AAAI).

Global temperature, as implemented by the authors (zhengli97/CTKD, commit 7d52522):
``models/temp_global.py`` (Global_T, GradientReversalFunction), ``helper/loops.py``
(train_distill), ``train_student.py`` (CosineDecay, the epoch loop) and
``distiller_zoo/KD.py`` (DistillKL):

    theta        one learned scalar, initialised to 1 (Global_T: ``torch.ones(1)``)
    T            = t_start + t_range * sigmoid(GRL_lambda(theta))
    ctkd         = KL( softmax(t / T) || softmax(s / T) ), summed over classes,
                   averaged over the batch ("batchmean"), times T^2
    loss         = gamma * CE(s, y) + alpha * ctkd

T is a tensor, so the loss is differentiable in T through every place it
appears: s / T, t / T (the teacher's logits carry no gradient, its softmax at T
does) and the T^2 factor; no eps. ``GRL_lambda`` is the identity forward and
multiplies the gradient by ``lambda`` backward (GradientReversalFunction:
``dx = lambda_ * grads``; the sign reversal lives in lambda, which is <= 0).
Hence theta follows  lambda * dL/dtheta  (plus weight decay, added by the
optimizer): with lambda < 0 it ascends the distillation loss, the adversarial
"harder" temperature; the student descends it as usual.

lambda is CosineDecay(max_value=decay_max, min_value=decay_min,
num_loops=decay_loops).get_value(epoch), read once per epoch with the 1-based
epoch of ``for epoch in range(1, opt.epochs + 1)``:

    i      = clamp(epoch_1based, 0, decay_loops)
    lambda = (cos(i pi / decay_loops) + 1) / 2 * (decay_max - decay_min) + decay_min

Here ``epoch_1based = floor(self.progress.epoch) + 1``, so lambda is constant
within an epoch exactly as theirs; with the defaults it goes from
-0.0245 (epoch 1) down to -1 (epoch 10 and after): |lambda| rises 0 -> 1.

The temperature module (``GlobalTemperature``) is this method's own
submodule: theta joins the student's SGD with its weight decay, as CTKD's
``trainable_list.append(mlp)`` puts it into the single optimizer group
(``weight_decay=5e-4`` applies to it there too).

Defaults (CTKD ``scripts/run_cifar_distill.sh`` and ``train_student.py``):
  gamma = 0.1, alpha = 0.9   ``-r 0.1 -a 0.9 -b 0`` (the script; also argparse defaults)
  t_start = 1.0              ``--t_start`` argparse default
  t_range = 20.0             ``--t_end`` argparse default. Their code ADDS it to
                             t_start (``opt.t_start + opt.t_end * torch.sigmoid(temp)``),
                             so it is the width of the range, not its end: T lies
                             in (1, 21), starting at 1 + 20 sigmoid(1) = 15.62.
                             The name here says what it does.
  decay_max = 0.0, decay_min = -1.0, decay_loops = 10.0
                             ``--cosine_decay 1 --decay_max 0 --decay_min -1 --decay_loops 10``
                             (the script; the argparse defaults 0 / 0 / 0 would
                             divide by zero in get_value).
``--kd_T 4`` is not used with ``--have_mlp 1`` (it only sets the fixed T of
plain KD), so there is no fixed temperature hyperparameter here.

Deviations: only the global temperature (``--mlp_name global``), with the cosine
schedule (``--cosine_decay 1``; their LinearDecay is not offered). The learned
temperature is logged as the diagnostic term ``ctkd_T`` (detached, weight 0:
the harness leaves it out of the total loss and logs its epoch mean).

``ctkd+ls`` (logit standardisation, ``methods/ls.py``): both models' logits are z-scored before
the softmax at the learned T and alpha = ls.kd_weight (9), as the CTKD+ls runs of
sunshangquan/logit-standardization-KD (``CTKD/scripts/run_cifar_distill.sh``: ``-a 9``; its
``--kd_T 2`` is unused with the learned temperature; ``DistillKL_logit_stand``).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .base import BuildContext, Distiller, HyperparameterError, Range, register_method
from .kd import kd_loss


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; backward multiplies the incoming gradient by ``lam`` (CTKD's gradient reversal,
    whose ``lam`` is negative: the reversal is in the sign of lambda, not in the function)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, lam: float) -> torch.Tensor:
        ctx.lam = float(lam)
        return x.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.lam, None


def scale_gradient(x: torch.Tensor, lam: float) -> torch.Tensor:
    return _ScaleGradient.apply(x, lam)


def cosine_lambda(epoch_1based: float, decay_max: float, decay_min: float, decay_loops: float) -> float:
    """CTKD ``CosineDecay.get_value``: decay_max at 0, decay_min from ``decay_loops`` on."""
    i = min(max(epoch_1based, 0), decay_loops)
    return (math.cos(i * math.pi / decay_loops) + 1.0) * 0.5 * (decay_max - decay_min) + decay_min


class GlobalTemperature(nn.Module):
    """One learned scalar theta (init 1); ``forward(lam)`` = t_start + t_range * sigmoid(GRL_lam(theta))."""

    def __init__(self, t_start: float, t_range: float):
        super().__init__()
        self.t_start = t_start
        self.t_range = t_range
        self.theta = nn.Parameter(torch.ones(1))

    def forward(self, lam: float) -> torch.Tensor:
        theta = scale_gradient(self.theta, lam)
        return (self.t_start + self.t_range * torch.sigmoid(theta)).squeeze(0)


@register_method("ctkd")
class CTKD(Distiller):
    defaults = {"gamma": 0.1, "alpha": 0.9, "t_start": 1.0, "t_range": 20.0,
                "decay_max": 0.0, "decay_min": -1.0, "decay_loops": 10.0}
    ranges = {"gamma": Range(ge=0), "alpha": Range(ge=0), "t_start": Range(gt=0), "t_range": Range(gt=0),
              "decay_max": Range(), "decay_min": Range(), "decay_loops": Range(gt=0)}
    modifier_rules = {"ls": {"alpha": "kd_weight"}}

    def __init__(self, ctx: BuildContext, **hparams):
        super().__init__(ctx, **hparams)
        self.temperature = GlobalTemperature(self.t_start, self.t_range)

    @classmethod
    def check_hparams(cls, hparams):
        super().check_hparams(hparams)
        if hparams["decay_min"] > hparams["decay_max"]:
            raise HyperparameterError(f"{cls.name}.decay_min must be <= {cls.name}.decay_max, "
                                      f"got {hparams['decay_min']!r} > {hparams['decay_max']!r}")

    def grl_lambda(self) -> float:
        """The gradient multiplier of this epoch: CosineDecay at the 1-based epoch floor(progress.epoch) + 1."""
        epoch_1based = math.floor(self.progress.epoch) + 1
        return cosine_lambda(epoch_1based, self.decay_max, self.decay_min, self.decay_loops)

    def loss_weights(self):
        return {"ctkd": self.alpha, "ctkd_T": 0.0}

    def losses(self, student, teacher, batch):
        T = self.temperature(self.grl_lambda())
        return {"ctkd": kd_loss(self.soft_logits(student.logits), self.soft_logits(teacher.logits), T),
                "ctkd_T": T.detach()}
