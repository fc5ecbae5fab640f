"""cat_kd: Guo, Yan, Li, Lin, "Class Attention Transfer Based Knowledge
Distillation", CVPR 2023.

Each model's class activation maps (CAMs) - its classifier applied as a 1x1
convolution to the map its embedding is pooled from - are average-pooled to a
small grid and, optionally normalised, matched by a mean-squared error. As the
official code computes it (GzyAftermath/CAT-KD ``mdistiller/distillers/CAT_KD.py``
``CAT_loss``, its ``*_test`` models in ``mdistiller/models/cifar/`` and
``tools/train.py``), with W_s, W_t the classifiers' weights (K x D) and
A_s, A_t the maps before global pooling (``ModelOutput.embedding_map``):

    CAM_s = conv1x1(A_s; W_s)                      (B, K, H_s, W_s), no bias
    CAM_t = conv1x1(A_t; W_t)   (no grad)          (B, K, H_t, W_t), no bias
    P_x   = adaptive_avg_pool2d(CAM_x, (R, R))     both to the same R x R grid
    N_x   = P_x / max(||P_x[b, k]||_2, 1e-12)      over the R*R positions of each
                                                   (sample, class)  if cam_norm = "l2"
          = P_x                                    if cam_norm = "none"
    cat   = mean over all B*K*R*R elements of (N_s - N_t)^2     (``F.mse_loss``)
    loss  = gamma * CE(s, y) + beta * cat

The student's CAM uses its classifier's CURRENT weights at every step (read
from ``ModelOutput.classifier``), so W_s receives the CAT gradient besides the
CE one, as in their code (the student's ``conv_test`` is its classifier and
produces the CAM inside the forward pass). The teacher's classifier is frozen:
its CAM is computed without gradient (their ``with torch.no_grad()`` teacher
forward). Cross-architecture pairs with CAMs of different resolutions meet on
the same R x R grid (the pooling above; e.g. 8x8 -> 2x2 and 4x4 -> 2x2).

Their models: ``tools/train.py`` with ``if_test: True`` (every CAT-KD config)
converts the teacher to its ``*_test`` twin, copying the fc weight into a
bias-free 1x1 ``conv_test`` (the fc bias is dropped), and builds the student as
a ``*_test`` model whose classifier IS a bias-free 1x1 conv applied before the
global average pool (logits = avgpool(conv_test(A)) = W avgpool(A), no bias).
Here the models are the harness's: the CAMs use the classifier's weight only
(no bias, as theirs), but the student keeps its ``nn.Linear`` with bias and
PyTorch's default init for its logits (deviation below).

Options of their code left out: ``onlyCAT`` (CE dropped; here ``gamma = 0``),
``IF_BINARIZE`` and ``IF_OnlyTransferPartialCAMs`` (their CAT ablations; off in
every CAT-KD config).

Deviations:
  * The student's classifier keeps its bias (used by its logits, not by its
    CAM) and the model's own initialisation; CAT-KD's ``*_test`` students have a
    bias-free ``conv_test``, initialised like their other convs (normal, std
    sqrt(2 / fan_out)) in ResNet, ResNet50, WRN and MobileNetV2, but left at
    PyTorch's default conv init in VGG (``VGG_test`` creates ``conv_test`` after
    its ``_initialize_weights()`` call) and in ShuffleV1 / ShuffleV2 (their
    ``*_test`` classes have no init loop). The student is the harness's model; a
    method does not change it.
  * The teacher CAM is cast to the student CAM's dtype before the MSE (mixed
    precision only; no effect in float32).

Defaults (their ``mdistiller/engine/cfg.py``, used by a config that does not set
a value; per-pair values of their ``configs/cifar100/CAT_KD/*.yaml`` are in
``kdcore/presets/cifar100.toml``):
  gamma = 1.0             ``CAT_KD.LOSS.CE_WEIGHT = 1.0`` (every config: 1.)
  beta = 400.0            ``CAT_KD.LOSS.CAT_loss_weight = 400.0`` (the configs set
                          0.7 - 600 per pair: res32x4_res8x4.yaml 15.)
  cam_resolution = 2      ``CAT_KD.LOSS.CAM_RESOLUTION = 2`` (ShuffleNet students: 4)
  cam_norm = "l2"         ``CAT_KD.IF_NORMALIZE = True`` (same-architecture
                          configs: False, i.e. "none")
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import BuildContext, Choice, Distiller, ModelOutput, PairNotSupported, Range, register_method

_NORMS = ("l2", "none")


def class_activation_maps(fmap: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The classifier ``weight`` (K, D) applied as a bias-free 1x1 convolution to ``fmap`` (B, D, H, W)."""
    return F.conv2d(fmap, weight.to(fmap.dtype)[:, :, None, None])


def cat_loss(cam_s: torch.Tensor, cam_t: torch.Tensor, resolution: int, cam_norm: str) -> torch.Tensor:
    """Their ``CAT_loss``: both CAMs pooled to (R, R), optionally L2-normalised per map, then MSE (mean)."""
    p_s = F.adaptive_avg_pool2d(cam_s, (resolution, resolution))
    p_t = F.adaptive_avg_pool2d(cam_t, (resolution, resolution)).to(p_s.dtype)
    if cam_norm == "l2":
        p_s, p_t = F.normalize(p_s, dim=(2, 3)), F.normalize(p_t, dim=(2, 3))
    return F.mse_loss(p_s, p_t)


def _head(out: ModelOutput | None, who: str) -> tuple[nn.Linear, torch.Tensor]:
    if out is None:
        raise ValueError(f"cat_kd needs the {who}'s output")
    # a model whose logits are not a linear map of its last conv map's global pool (the seed paper's networks:
    # flatten + MLP; some timm models) has no class activation map, and CAT-KD's code knows only such heads:
    # the pair is "n/a" in the table, as FSP's unequal channels
    if not isinstance(out.classifier, nn.Linear):
        raise PairNotSupported(f"cat_kd needs the {who}'s final nn.Linear classifier (ModelOutput.classifier), "
                               f"got {type(out.classifier).__name__}")
    if out.embedding_map is None or out.embedding_map.dim() != 4:
        raise PairNotSupported(f"cat_kd needs the {who}'s (B, D, H, W) map before global pooling "
                               "(ModelOutput.embedding_map); this model does not provide one")
    if out.classifier.in_features != out.embedding_map.shape[1]:
        raise PairNotSupported(f"cat_kd: the {who}'s classifier takes {out.classifier.in_features} inputs, its "
                               f"embedding map has {out.embedding_map.shape[1]} channels")
    return out.classifier, out.embedding_map


@register_method("cat_kd")
class CATKD(Distiller):
    defaults = {"gamma": 1.0, "beta": 400.0, "cam_resolution": 2, "cam_norm": "l2"}
    ranges = {"gamma": Range(ge=0), "beta": Range(ge=0), "cam_resolution": Range(ge=1),
              "cam_norm": Choice(*_NORMS)}
    needs_features = True  # reads embedding_map

    def __init__(self, ctx: BuildContext, **hparams):
        super().__init__(ctx, **hparams)
        if ctx.teacher is None:
            raise ValueError("cat_kd needs a teacher")
        s_head, _ = _head(ctx.student, "student")
        t_head, _ = _head(ctx.teacher, "teacher")
        if s_head.out_features != t_head.out_features:
            raise ValueError(f"cat_kd needs the same classes in both models: student {s_head.out_features}, "
                             f"teacher {t_head.out_features}")

    def loss_weights(self):
        return {"cat_kd": self.beta}

    def losses(self, student, teacher, batch):
        s_head, s_map = _head(student, "student")
        t_head, t_map = _head(teacher, "teacher")
        cam_s = class_activation_maps(s_map, s_head.weight)
        with torch.no_grad():
            cam_t = class_activation_maps(t_map.detach(), t_head.weight.detach())
        return {"cat_kd": cat_loss(cam_s, cam_t, self.cam_resolution, self.cam_norm)}
