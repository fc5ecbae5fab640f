"""fitnet: Romero, Ballas, Kahou, Chassang, Gatta, Bengio, "FitNets: Hints for
Thin Deep Nets", ICLR 2015.

A student feature map (the "guided layer") is mapped by a trainable regressor
onto the shape of the teacher's map at the same index (the "hint") and pulled
towards it by a mean-squared error. As implemented (RepDistiller
``distiller_zoo/FitNet.py`` HintLoss, ``models/util.py`` ConvReg, wired in
``train_student.py`` / ``helper/loops.py`` under ``--distill hint``):

    f_s  = features_s[hint_layer]                    (B, C_s, H_s, W_s)
    f_t  = features_t[hint_layer]   (detached)       (B, C_t, H_t, W_t)
    r    = ReLU(BN(conv(f_s)))                       (B, C_t, H_t, W_t)
    fitnet_hint = mean over all B*C_t*H_t*W_t elements of (r - f_t)^2
    loss = gamma * CE(s, y) + beta * fitnet_hint

The regressor (ConvReg) picks its conv from the spatial sizes of the probe
maps, comparing heights as RepDistiller does:

    H_s == 2 H_t       Conv2d(C_s, C_t, 3, stride 2, padding 1)
    2 H_s == H_t       ConvTranspose2d(C_s, C_t, 4, stride 2, padding 1)
    H_s >= H_t         Conv2d(C_s, C_t, kernel (1 + H_s - H_t, 1 + W_s - W_t)),
                       no padding: a 1x1 conv when the sizes are equal (every
                       same-architecture pair), a "valid" conv that shrinks
                       the map to the teacher's size otherwise
    otherwise          (student smaller, not by exactly 2x) RepDistiller
                       raises; here the teacher map is adaptive-average-pooled
                       down to the student's (H_s, W_s) and the regressor is
                       the 1x1 conv of the equal-size case. This fallback is
                       ours, not RepDistiller's.

All convs keep PyTorch's default bias and initialisation, as ConvReg does;
BN is followed by ReLU (ConvReg's ``use_relu=True``). The regressor is owned
by this method, so its parameters join the student's optimizer (RepDistiller
puts ``regress_s`` in ``trainable_list``). With the RepDistiller models at
32x32 input, ``features[2]`` gives equal sizes for same-family pairs and
vgg13 -> MobileNetV2, and a 2x-smaller student map (transposed conv) for
ResNet50 -> MobileNetV2 / vgg8 and resnet32x4 / wrn_40_2 -> ShuffleV1 / V2.

Training schedule: the FitNets paper trains in two stages (first the student
up to the guided layer on the hint loss alone, then the whole student with
KD). RepDistiller, and this benchmark, train hint + CE jointly in one stage
from the start.

Defaults (RepDistiller):
  hint_layer = 2   ``train_student.py`` ``--hint_layer`` default
  gamma = 1.0      ``scripts/run_cifar_distill.sh`` FitNet row (``-r`` left at
                   its ``train_student.py`` default 1; ``-a 0``: no KD term)
  beta = 100.0     ``scripts/run_cifar_distill.sh`` FitNet row ``-b 100``
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import BuildContext, Distiller, HyperparameterError, Range, register_method


class HintRegressor(nn.Module):
    """RepDistiller's ConvReg (conv + BN + ReLU; ``relu=False``: conv + BN, its ``use_relu=False``), sized from
    two probe shapes.

    ``s_shape`` / ``t_shape`` are ``(B, C, H, W)``. ``pool_teacher_to`` is
    ``None`` when the regressor's output already has the teacher's shape, else
    the ``(H, W)`` the teacher map must be pooled to (the fallback case).
    """

    def __init__(self, s_shape, t_shape, relu: bool = True):
        super().__init__()
        self.relu = relu
        _, s_c, s_h, s_w = (int(v) for v in s_shape)
        _, t_c, t_h, t_w = (int(v) for v in t_shape)
        self.pool_teacher_to: tuple[int, int] | None = None
        if s_h == 2 * t_h:
            self.mode = "stride2"
            self.conv = nn.Conv2d(s_c, t_c, kernel_size=3, stride=2, padding=1)
        elif 2 * s_h == t_h:
            self.mode = "transposed"
            self.conv = nn.ConvTranspose2d(s_c, t_c, kernel_size=4, stride=2, padding=1)
        elif s_h >= t_h and s_w >= t_w:
            self.mode = "valid" if (s_h, s_w) != (t_h, t_w) else "equal"
            self.conv = nn.Conv2d(s_c, t_c, kernel_size=(1 + s_h - t_h, 1 + s_w - t_w))
        else:
            # fallback (not in RepDistiller, whose ConvReg raises here)
            self.mode = "pool_teacher"
            self.pool_teacher_to = (s_h, s_w)
            self.conv = nn.Conv2d(s_c, t_c, kernel_size=1)
        self.bn = nn.BatchNorm2d(t_c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn(self.conv(x))
        return F.relu(out) if self.relu else out


def hint_loss(regressed: torch.Tensor, teacher_map: torch.Tensor) -> torch.Tensor:
    """Element-wise MSE, mean over every element (``nn.MSELoss()``)."""
    return F.mse_loss(regressed, teacher_map, reduction="mean")


@register_method("fitnet")
class FitNet(Distiller):
    defaults = {"gamma": 1.0, "beta": 100.0, "hint_layer": 2}
    # hint_layer's upper bound depends on the models: checked when the method is built
    ranges = {"gamma": Range(ge=0), "beta": Range(ge=0), "hint_layer": Range(ge=0)}
    needs_features = True

    def __init__(self, ctx: BuildContext, **hparams):
        super().__init__(ctx, **hparams)
        if ctx.teacher is None:
            raise ValueError("fitnet needs a teacher")
        k = self.hint_layer
        n_s, n_t = len(ctx.student.features), len(ctx.teacher.features)
        if not 0 <= k < min(n_s, n_t):
            raise HyperparameterError(
                f"fitnet.hint_layer={k} is out of range: the student has {n_s} feature maps, "
                f"the teacher {n_t} (index 0 is the stem, 1.. the stages)"
            )
        s_map, t_map = ctx.student.features[k], ctx.teacher.features[k]
        if s_map.dim() != 4 or t_map.dim() != 4:
            raise ValueError(
                f"fitnet needs 4-D feature maps at hint_layer={k}, got student "
                f"{tuple(s_map.shape)} and teacher {tuple(t_map.shape)}"
            )
        self.regressor = HintRegressor(s_map.shape, t_map.shape)

    def loss_weights(self):
        return {"fitnet_hint": self.beta}

    def losses(self, student, teacher, batch):
        k = self.hint_layer
        f_t = teacher.features[k].detach()
        if self.regressor.pool_teacher_to is not None:
            f_t = F.adaptive_avg_pool2d(f_t, self.regressor.pool_teacher_to)
        f_s = self.regressor(student.features[k])
        return {"fitnet_hint": hint_loss(f_s, f_t)}
