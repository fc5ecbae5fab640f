"""fsp: Yim, Joo, Bae, Kim, "A Gift from Knowledge Distillation: Fast Optimization, Network Minimization
and Transfer Learning", CVPR 2017.

Two stages, as RepDistiller runs it (``train_student.py --distill fsp``, ``helper/pretrain.py`` ``init``,
``distiller_zoo/FSP.py``):

1. ``init`` stage, ``init_epochs`` (30) epochs: only the student's feature modules train
   (``model_s.get_feat_modules()``: stem and stages, in train mode; the rest of the student in eval mode),
   with their own SGD (the recipe's lr, momentum, weight decay; constant lr), on

       fsp(g) = [ mean over the H*W positions of bot_i (outer) top_i ]  for consecutive maps
                (bot, top) = (g[i], g[i+1]) of features[0..L] (RepDistiller's ``feat[:-1]``), the larger
                map adaptive-average-pooled to the smaller one's height: a (B, C_i, C_{i+1}) matrix each
                (RepDistiller's ``compute_fsp`` builds the transpose, (B, C_{i+1}, C_i): the loss is the same)
       loss = sum over i of mean((fsp_i(student) - fsp_i(teacher))^2)      (no cross-entropy)

2. main stage, the recipe's epochs: cross-entropy only (RepDistiller's ``loss_kd = 0`` for fsp, and
   ``-a 0``): the student trains from its pre-trained feature layers.

Teacher maps are detached (its forward runs without gradients). FSP needs equal channel counts at every
position of the two lists (RepDistiller's ``FSP`` raises "num of channels not equal"); such a pair
is refused with ``PairNotSupported`` when the method is built.

Defaults (RepDistiller): gamma (CE weight) = 1 (``-r`` default), init_epochs = 30 (``--init_epochs``);
``scripts/run_cifar_distill.sh``'s ``-b 50`` weighs a term that is 0 in the main stage, so it has no
hyperparameter here. Deviations: pooling to (H, W) of the smaller map instead of (H, H) (the same for
square maps).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import BuildContext, Distiller, PairNotSupported, Range, Stage, register_method


def fsp_matrices(maps: list[torch.Tensor]) -> list[torch.Tensor]:
    """RepDistiller's ``FSP.compute_fsp`` transposed: one (B, C_i, C_{i+1}) Gram matrix per consecutive pair
    of maps (the reference's is (B, C_{i+1}, C_i); the squared-difference mean does not change)."""
    out = []
    for bot, top in zip(maps[:-1], maps[1:]):
        if bot.shape[2] > top.shape[2]:
            bot = F.adaptive_avg_pool2d(bot, top.shape[2:])
        elif bot.shape[2] < top.shape[2]:
            top = F.adaptive_avg_pool2d(top, bot.shape[2:])
        out.append(torch.einsum("bihw,bjhw->bij", bot, top) / (bot.shape[2] * bot.shape[3]))
    return out


def fsp_loss(student_maps: list[torch.Tensor], teacher_maps: list[torch.Tensor]) -> torch.Tensor:
    return sum(((s - t) ** 2).mean() for s, t in zip(fsp_matrices(student_maps), fsp_matrices(teacher_maps)))


@register_method("fsp")
class FSP(Distiller):
    defaults = {"gamma": 1.0, "init_epochs": 30}
    ranges = {"gamma": Range(ge=0), "init_epochs": Range(ge=0)}
    needs_features = True
    has_stages = True

    def __init__(self, ctx: BuildContext, **hparams):
        super().__init__(ctx, **hparams)
        if ctx.student is not None and ctx.teacher is not None:
            s_c = [f.shape[1] for f in ctx.student.features]
            t_c = [f.shape[1] for f in ctx.teacher.features]
            if s_c != t_c:
                raise PairNotSupported(f"fsp needs the student's and teacher's feature maps to have equal channel "
                                       f"counts (RepDistiller's FSP): student {s_c}, teacher {t_c}")

    @classmethod
    def stages_for(cls, hparams):
        return [Stage("init", hparams["init_epochs"])] if hparams["init_epochs"] > 0 else []

    def stage_modules(self, stage, student):
        return list(student.feature_modules())

    def stage_losses(self, stage, student, teacher, batch):
        return {"fsp": fsp_loss(student.features, [f.detach() for f in teacher.features])}
