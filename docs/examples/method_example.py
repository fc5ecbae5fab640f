"""kd_tanneal: Hinton et al.'s KD with a temperature that anneals over training.

Hinton, Vinyals, Dean 2015, "Distilling the Knowledge in a Neural Network", with the
temperature lowered linearly from ``T_start`` to ``T_end`` over the run (soft targets early,
sharper ones late), the curriculum idea of Li et al. 2023 ("Curriculum Temperature for
Knowledge Distillation") without its learned temperature:

    T    = T_start + (T_end - T_start) * min(epoch / epochs, 1)
    kd   = KL( softmax(t / T) || softmax(s / T) ) * T^2, batch mean
    loss = gamma * CE(s, y) + alpha * kd

``epoch`` is fractional (``self.progress``: completed epochs plus the fraction of the current one),
so the temperature changes at every step and a resumed run sees the same values.
Defaults: T_start = 8.0, T_end = 2.0 (around kd's T = 4), gamma = 0.1 and alpha = 0.9 (RepDistiller's
KD row, as kd's defaults).
"""
from __future__ import annotations

from methods import Distiller, Range, register_method
from methods.kd import kd_loss


@register_method("kd_tanneal")
class KDTemperatureAnneal(Distiller):
    # every hyperparameter with its default (--set kd_tanneal.T_end=1 works) and its valid range,
    # checked before any teacher trains (--set kd_tanneal.T_start=0: exit 2, one line)
    defaults = {"T_start": 8.0, "T_end": 2.0, "gamma": 0.1, "alpha": 0.9}
    ranges = {"T_start": Range(gt=0), "T_end": Range(gt=0), "gamma": Range(ge=0), "alpha": Range(ge=0)}

    def temperature(self) -> float:
        """The temperature at this step (``self.progress`` is set before every step)."""
        return self.T_start + (self.T_end - self.T_start) * min(self.progress.fraction, 1.0)

    def loss_weights(self):  # weight of each term (CE is weighted by gamma); read every step
        return {"kd_tanneal": self.alpha}

    def losses(self, student, teacher, batch):  # ModelOutputs; unweighted named terms
        return {"kd_tanneal": kd_loss(student.logits, teacher.logits, self.temperature())}
