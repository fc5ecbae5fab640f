"""ls: logit standardisation, Sun et al., "Logit Standardization in Knowledge Distillation", CVPR 2024.

A modifier, not a method: ``kd+ls``, ``dkd+ls``, ``mlkd+ls``, ``ctkd+ls``. Where the base method's
official code (sunshangquan/logit-standardization-KD) applies ``normalize``, each model's logits are
z-scored per sample before the softmax at the temperature:

    standardise(z) = (z - mean_j z_j) / (1e-7 + std_j z_j)      std: unbiased (torch's ``std``), over classes

(``mdistiller/distillers/KD.py`` ``normalize``; the same in ``DKD.py``, ``MLKD.py`` and
``CTKD/distiller_zoo/KD.py``). Cross-entropy on the labels sees the raw logits. MLKD standardises its
instance-level KD terms only, not its class- and batch-level Gram terms, and its confidence masks read
the raw teacher softmax: each base method calls ``soft_logits`` exactly where its reference calls
``normalize``.

Hyperparameters, as their ``tools/train.py`` sets them with ``--logit-stand --base-temp 2 --kd-weight 9``
(also the argparse defaults; the README shows the command for resnet32x4 -> resnet8x4 only. Their
``logs/`` files name other values for other pairs, e.g. ``kd,vgg13,vgg8,3,9``, ``kd,resnet110,resnet20,4,12``,
``dkd,vgg13,vgg8,2,15,2.0`` (whose last field reads as a DKD beta of 2.0, where the pair's config has 6.0;
the logs do not record their configuration); a preset can set them):
  base_temp = 2.0   the base method's temperature
  kd_weight = 9.0   the base method's distillation weight
A base method declares what each value replaces in ``modifier_rules["ls"]``, following their
``tools/train.py``: KD: ``T = base_temp``, KD weight ``= kd_weight``; DKD: ``T = base_temp``, alpha and
beta ``*= kd_weight`` (their code multiplies, so a per-pair beta stays per pair); MLKD: ``T = base_temp``,
KD weight ``= kd_weight``; CTKD (their ``CTKD/scripts/run_cifar_distill.sh``: ``-a 9 --kd_T 2``): alpha
``= kd_weight`` (its temperature is learned). Rules: ``"base_temp"`` (set), ``"kd_weight"`` (set),
``"times_kd_weight"`` (multiply).

Deviation: none in the formula. In ``CTKD/train_student.py`` the ``--logit_stand`` flag is inverted
(``DistillKL() if opt.logit_stand else DistillKL_logit_stand()``) and their script omits it, so their
CTKD+ls runs did standardise: ``ctkd+ls`` standardises, as those runs did.
"""
from __future__ import annotations

import torch

from .base import Distiller, Range, register_method

EPS = 1e-7
RULES = ("base_temp", "kd_weight", "times_kd_weight")


def standardise(logits: torch.Tensor) -> torch.Tensor:
    """Per-sample z-score over the classes: (z - mean) / (1e-7 + unbiased std)."""
    mean = logits.mean(dim=-1, keepdim=True)
    std = logits.std(dim=-1, keepdim=True)
    return (logits - mean) / (EPS + std)


@register_method("ls")
class LogitStandardisation(Distiller):
    defaults = {"base_temp": 2.0, "kd_weight": 9.0}
    ranges = {"base_temp": Range(gt=0), "kd_weight": Range(ge=0)}
    modifier = True
    needs_teacher = False  # it adds no term of its own; its partner needs the teacher
    ce_weight_key = ""

    @classmethod
    def adjust_partner(cls, rule, partner_hp, hp):
        out = dict(partner_hp)
        for key, how in rule.items():
            if how == "base_temp":
                out[key] = float(hp["base_temp"])
            elif how == "kd_weight":
                out[key] = float(hp["kd_weight"])
            elif how == "times_kd_weight":
                out[key] = float(partner_hp[key]) * float(hp["kd_weight"])
            else:  # a method file declared a rule this modifier does not know
                raise ValueError(f"ls: unknown rule {how!r} for {key!r}; rules: {', '.join(RULES)}")
        return out

    def modify(self, partner: Distiller) -> None:
        partner.logit_transform = standardise
