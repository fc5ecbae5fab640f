"""teacher_head: the student's embedding, projected, is classified by the teacher's own classifier.

An example of a method that reads the teacher module when it builds (in the
spirit of SimKD, Chen et al., CVPR 2022, "Knowledge Distillation with the
Reused Teacher Classifier"): at build time it copies the teacher's last
``nn.Linear`` (weight and bias) into its own buffers and sizes a projection
``P`` from the student's embedding to the teacher's. Then

    head = KL( softmax(t / T) || softmax((W_t P e_s + b_t) / T) ) * T^2, batch mean
    loss = gamma * CE(s, y) + beta * head

The teacher module itself is never kept (models are read-only at build time).
Defaults: T = 4.0, gamma = 1.0, beta = 1.0 (ours: an example, not a benchmark row).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from methods import Distiller, Range, register_method
from methods.kd import kd_loss


def last_linear(model: nn.Module) -> nn.Linear:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"teacher_head: {type(model).__name__} has no nn.Linear classifier")
    return linears[-1]


@register_method("teacher_head")
class TeacherHead(Distiller):
    defaults = {"T": 4.0, "gamma": 1.0, "beta": 1.0}
    ranges = {"T": Range(gt=0), "gamma": Range(ge=0), "beta": Range(ge=0)}
    needs_features = True  # reads the student's embedding

    def __init__(self, ctx, **hparams):
        super().__init__(ctx, **hparams)
        if ctx.teacher_model is None:
            raise ValueError("teacher_head needs the teacher model")
        head = last_linear(ctx.teacher_model)
        self.register_buffer("head_weight", head.weight.detach().clone())
        self.register_buffer("head_bias", head.bias.detach().clone())
        self.proj = nn.Linear(ctx.student.embedding.shape[1], head.in_features)

    def loss_weights(self):
        return {"teacher_head": self.beta}

    def losses(self, student, teacher, batch):
        logits = F.linear(self.proj(student.embedding), self.head_weight, self.head_bias)
        return {"teacher_head": kd_loss(logits, teacher.logits.detach(), self.T)}
