"""vanilla: the student trained alone with cross-entropy (the baseline row of every table).

Formula as implemented: loss = gamma * CE(student logits, labels), CE averaged
over the batch. Default gamma = 1 (RepDistiller's train_student.py baseline,
i.e. train_teacher.py's recipe applied to the student). The teacher is never
run (``needs_teacher = False``), so a vanilla run costs one student step.
"""
from __future__ import annotations

from .base import Distiller, Range, register_method


@register_method("vanilla")
class Vanilla(Distiller):
    defaults = {"gamma": 1.0}
    ranges = {"gamma": Range(ge=0)}
    needs_teacher = False
