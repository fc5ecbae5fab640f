"""ft: Kim, Park, Kwak, "Paraphrasing Complex Network: Network Compression via Factor Transfer", NeurIPS 2018.

Two stages, as RepDistiller runs it (``train_student.py --distill factor``, ``helper/pretrain.py`` ``init``,
``helper/loops.py``, ``distiller_zoo/FT.py`` ``FactorTransfer``, ``models/util.py`` ``Paraphraser`` and
``Translator``), with f_s, f_t the last stage maps (``features[-1]``, RepDistiller's ``feat[-2]``):

    paraphraser(f) = encoder: 3 x [conv3x3 (bias), LeakyReLU(0.1)]  C_t -> C_t -> C_t/2 -> C_t/2  (no BN)
                     decoder: 3 x [convT3x3 (bias), LeakyReLU(0.1)]  C_t/2 -> C_t/2 -> C_t -> C_t
    translator(f)  = 3 x [conv3x3 (bias), BN, LeakyReLU(0.1)]      C_s -> C_s -> C_t/2 -> C_t/2

1. ``init`` stage, ``init_epochs`` (30) epochs: only the paraphraser trains, with its own SGD at
   ``init_lr`` (RepDistiller: 0.01 when the student is a CIFAR resnet or wrn, else the student's lr) on
   MSE(decoder(encoder(f_t)), f_t) (``nn.MSELoss``, mean); no cross-entropy.
2. main stage: CE + beta * FT with the paraphraser frozen (eval mode, out of the optimizer, as
   RepDistiller's ``module_list[2].eval()``) and the translator training with the student:

       factor(f) = l2-normalise over positions of mean over channels of f^2
       FT        = mean | factor(translator(f_s)) - factor(encoder(f_t)) |     (p1 = 2, p2 = 1)

   the larger map average-pooled to the smaller one's height first.

Teacher maps are detached; the paraphraser's factor carries no gradient in the main stage (RepDistiller
computes one into the paraphraser, which nothing applies).

Defaults (RepDistiller): gamma (CE weight) = 1, beta = 200 (``run_cifar_distill.sh``: ``-a 0 -b 200``),
init_epochs = 30, init_lr = 0.01 (``pretrain.py``: 0.01 for ``factor`` with resnet8..110, resnet8x4/32x4,
wrn students; otherwise ``opt.learning_rate``: 0.05 for vgg8 students, which the ``cifar100`` preset sets
per pair, and 0.01 for MobileNetV2/ShuffleV1/V2, the default here), k = 0.5 (the factor rate).
Deviations: pooling to (H, W) instead of (H, H) (the same for square maps).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import BuildContext, Distiller, Range, Stage, register_method


def _stack(channels: list[int], transposed: bool, bn: bool) -> nn.Sequential:
    layers = []
    for cin, cout in zip(channels[:-1], channels[1:]):
        conv = nn.ConvTranspose2d if transposed else nn.Conv2d
        layers.append(conv(cin, cout, 3, 1, 1))
        if bn:
            layers.append(nn.BatchNorm2d(cout))
        layers.append(nn.LeakyReLU(0.1))
    return nn.Sequential(*layers)


class Paraphraser(nn.Module):
    def __init__(self, t_channels: int, k: float = 0.5):
        super().__init__()
        mid = int(t_channels * k)
        self.encoder = _stack([t_channels, t_channels, mid, mid], transposed=False, bn=False)
        self.decoder = _stack([mid, mid, t_channels, t_channels], transposed=True, bn=False)


class Translator(nn.Module):
    def __init__(self, s_channels: int, t_channels: int, k: float = 0.5):
        super().__init__()
        mid = int(t_channels * k)
        self.encoder = _stack([s_channels, s_channels, mid, mid], transposed=False, bn=True)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.encoder(f)


def factor(f: torch.Tensor) -> torch.Tensor:
    return F.normalize(f.pow(2).mean(1).flatten(1))


def ft_loss(factor_s: torch.Tensor, factor_t: torch.Tensor) -> torch.Tensor:
    """``FactorTransfer.factor_loss`` with p1 = 2, p2 = 1."""
    if factor_s.shape[2] > factor_t.shape[2]:
        factor_s = F.adaptive_avg_pool2d(factor_s, factor_t.shape[2:])
    elif factor_s.shape[2] < factor_t.shape[2]:
        factor_t = F.adaptive_avg_pool2d(factor_t, factor_s.shape[2:])
    return (factor(factor_s) - factor(factor_t)).abs().mean()


@register_method("ft")
class FT(Distiller):
    defaults = {"gamma": 1.0, "beta": 200.0, "init_epochs": 30, "init_lr": 0.01}
    ranges = {"gamma": Range(ge=0), "beta": Range(ge=0), "init_epochs": Range(ge=0), "init_lr": Range(gt=0)}
    needs_features = True
    has_stages = True

    def __init__(self, ctx: BuildContext, **hparams):
        super().__init__(ctx, **hparams)
        s_c, t_c = ctx.student.features[-1].shape[1], ctx.teacher.features[-1].shape[1]
        self.paraphraser = Paraphraser(t_c)
        self.translator = Translator(s_c, t_c)

    @classmethod
    def stages_for(cls, hparams):
        return [Stage("init", hparams["init_epochs"], hparams["init_lr"])] if hparams["init_epochs"] > 0 else []

    def train(self, mode: bool = True):
        super().train(mode)
        self.paraphraser.eval()  # RepDistiller: module_list[2].eval() in the main stage (no BN: no effect)
        return self

    def trainable_parameters(self):
        return [p for p in self.translator.parameters() if p.requires_grad]

    def stage_modules(self, stage, student):
        return [self.paraphraser]

    def stage_losses(self, stage, student, teacher, batch):
        f_t = teacher.features[-1].detach()
        return {"ft_paraphrase": F.mse_loss(self.paraphraser.decoder(self.paraphraser.encoder(f_t)), f_t)}

    def loss_weights(self):
        return {"ft": self.beta}

    def losses(self, student, teacher, batch):
        with torch.no_grad():
            factor_t = self.paraphraser.encoder(teacher.features[-1])
        return {"ft": ft_loss(self.translator(student.features[-1]), factor_t)}
