"""vanilla: the student trained alone with cross-entropy (the baseline row).

loss = gamma * CE(student logits, labels), gamma = 1.
"""
from __future__ import annotations

from .base import Distiller, register_method


@register_method("vanilla")
class Vanilla(Distiller):
    defaults = {"gamma": 1.0}
    needs_teacher = False
