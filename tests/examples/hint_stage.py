"""hint_stage: FitNets' own two-stage training (Romero et al., ICLR 2015), as an example of a declared stage.

The paper first trains the student's layers up to its guided layer, with a regressor, to predict the
teacher's hint layer, then trains the whole student on its task. Here, on the last stage maps:

    stage "hint" (init_epochs): only the student's feature modules and the regressor train (the
        student's classifier stays in eval mode and out of the stage's optimizer), on
        MSE(regressor(f_s), f_t), at the recipe's learning rate, no cross-entropy
    main: loss = gamma * CE(s, y) + alpha * KL(p_t || p_s) at T, x T^2 (Hinton's KD)

The regressor trains only in its stage (``trainable_parameters`` leaves it out of the main optimizer).
Defaults: init_epochs = 1, T = 4.0, gamma = 1.0, alpha = 1.0 (small, for the tests' 2-epoch runs).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from methods import Distiller, Range, Stage, register_method
from methods.kd import kd_loss


@register_method("hint_stage")
class HintStage(Distiller):
    defaults = {"init_epochs": 1, "T": 4.0, "gamma": 1.0, "alpha": 1.0}
    ranges = {"init_epochs": Range(ge=0), "T": Range(gt=0), "gamma": Range(ge=0), "alpha": Range(ge=0)}
    needs_features = True
    has_stages = True

    def __init__(self, ctx, **hparams):
        super().__init__(ctx, **hparams)
        s, t = ctx.student.features[-1], ctx.teacher.features[-1]  # probe outputs: real shapes
        self.regressor = nn.Conv2d(s.shape[1], t.shape[1], kernel_size=1)

    @classmethod
    def stages_for(cls, hparams):  # known before the method is built: the runner counts its epochs
        return [Stage("hint", hparams["init_epochs"])] if hparams["init_epochs"] else []

    def stage_modules(self, stage, student):  # what trains in the stage (train mode, its own SGD)
        return [self.regressor, *student.feature_modules()]

    def stage_losses(self, stage, student, teacher, batch):
        f_s, f_t = student.features[-1], teacher.features[-1].detach()
        return {"hint": F.mse_loss(F.adaptive_avg_pool2d(self.regressor(f_s), f_t.shape[2:]), f_t)}

    def trainable_parameters(self):
        return []  # the regressor trains in its stage only

    def loss_weights(self):
        return {"kd": self.alpha}

    def losses(self, student, teacher, batch):
        return {"kd": kd_loss(student.logits, teacher.logits, self.T)}
