"""ab: Heo, Lee, Yun, Choi, "Knowledge Transfer via Distillation of Activation Boundaries Formed by Hidden
Neurons", AAAI 2019.

Two stages, as RepDistiller runs it (``train_student.py --distill abound``, ``helper/pretrain.py``
``init``, ``distiller_zoo/AB.py`` ``ABLoss``, ``models/util.py`` ``Connector``):

1. ``init`` stage, ``init_epochs`` (30) epochs: the connector and the student's feature modules train
   (``init_trainable_list = [connector, model_s.get_feat_modules()]``, in train mode; the rest of the
   student in eval mode), with their own SGD (the recipe's lr, momentum, weight decay; constant lr), on
   the PRE-activation stage maps (``preact=True``: ``preact_features[1:]``, RepDistiller's
   ``feat[1:-1]``), n of them:

       g_i  = connector_i(s_i)   (identity when channels and height match, else ConvReg without ReLU:
                                  conv + BN, sized as fitnet's regressor)
       l_i  = sum over all elements of  (g + m)^2 [g > -m and t <= 0]  +  (g - m)^2 [g <= m and t > 0]
              (m = margin = 1; ``criterion_alternative_l2``)
       loss = sum over i of  2^(i - n + 1) * l_i / B / 1000 * 3          (no cross-entropy)

2. main stage, the recipe's epochs: cross-entropy only (RepDistiller's ``loss_kd = 0`` for abound, ``-a 0``):
   the student trains from its pre-trained feature layers; the connector is not used (RepDistiller keeps
   it in eval mode, out of the optimizer).

Teacher maps are detached. The two models must have the same number of stages (RepDistiller asserts
"unequal length of feat list"); otherwise ``PairNotSupported`` at build. Where the connector's ConvReg
cannot map the student's size to the teacher's (student map smaller than the teacher's, not by 2x),
the teacher map is average-pooled to the student's (fitnet's fallback; RepDistiller's ConvReg raises).

Deviation (wrn students only, from the model, not this method): RepDistiller's ``wrn.forward(preact=True)``
re-applies ``block2.layer[0].bn1``, ``block3.layer[0].bn1`` and the head's ``bn1`` to the stage outputs after
the forward, so in train mode those three BNs update their running statistics twice per step (effective
momentum 0.19 instead of 0.1; in the init stage the first two, the head's ``bn1`` being in eval mode there;
in the main stage all three, RepDistiller's loop keeps ``preact=True`` for abound). kdbench's wrn computes
each pre-activation once (``kdcore/models/wrn.py`` ``forward_kd``): the same values and gradients, the
reference's running statistics differ, and with them the student's test-time (eval-mode) outputs.

Defaults (RepDistiller): gamma (CE weight) = 1, init_epochs = 30 (``--init_epochs``), margin = 1.0
(``ABLoss(margin=1.0)``); ``run_cifar_distill.sh``'s ``-b 1`` weighs a term that is 0 in the main stage.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import BuildContext, Distiller, PairNotSupported, Range, Stage, register_method
from .fitnet import HintRegressor


def ab_layer_loss(g: torch.Tensor, t: torch.Tensor, margin: float) -> torch.Tensor:
    """``criterion_alternative_l2``: the activation-boundary hinge, summed over every element."""
    loss = ((g + margin) ** 2 * ((g > -margin) & (t <= 0)).to(g.dtype)
            + (g - margin) ** 2 * ((g <= margin) & (t > 0)).to(g.dtype))
    return loss.abs().sum()


class Connector(nn.Module):
    """RepDistiller's Connector: per stage, identity when (C, H) match, else ConvReg without ReLU."""

    def __init__(self, s_shapes, t_shapes):
        super().__init__()
        self.maps = nn.ModuleList(
            nn.Identity() if (s[1], s[2]) == (t[1], t[2]) else HintRegressor(s, t, relu=False)
            for s, t in zip(s_shapes, t_shapes))

    def forward(self, maps: list[torch.Tensor], targets: list[torch.Tensor]):
        out, tgt = [], []
        for m, f, t in zip(self.maps, maps, targets):
            out.append(m(f))
            pool = getattr(m, "pool_teacher_to", None)
            tgt.append(F.adaptive_avg_pool2d(t, pool) if pool is not None else t)
        return out, tgt


@register_method("ab")
class AB(Distiller):
    defaults = {"gamma": 1.0, "init_epochs": 30, "margin": 1.0}
    ranges = {"gamma": Range(ge=0), "init_epochs": Range(ge=0), "margin": Range(ge=0)}
    needs_features = True
    needs_preact = True
    has_stages = True

    def __init__(self, ctx: BuildContext, **hparams):
        super().__init__(ctx, **hparams)
        s_maps, t_maps = ctx.student.preact_features[1:], ctx.teacher.preact_features[1:]
        if len(s_maps) != len(t_maps):
            raise PairNotSupported(f"ab pairs the stages one to one (RepDistiller's Connector): the student has "
                                   f"{len(s_maps)} stages, the teacher {len(t_maps)}")
        self.connector = Connector([f.shape for f in s_maps], [f.shape for f in t_maps])

    @classmethod
    def stages_for(cls, hparams):
        return [Stage("init", hparams["init_epochs"])] if hparams["init_epochs"] > 0 else []

    def trainable_parameters(self):
        return []  # the connector trains in the init stage only

    def stage_modules(self, stage, student):
        return [self.connector, *student.feature_modules()]

    def stage_losses(self, stage, student, teacher, batch):
        g, t = self.connector(student.preact_features[1:], [f.detach() for f in teacher.preact_features[1:]])
        n, b = len(g), g[0].shape[0]
        return {"ab": sum(2.0 ** (i - n + 1) * ab_layer_loss(gi, ti, self.margin) / b / 1000 * 3
                          for i, (gi, ti) in enumerate(zip(g, t)))}
