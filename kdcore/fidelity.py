"""Did the student learn the teacher? Test-set fidelity and calibration (Stanton et al., NeurIPS 2021,
"Does knowledge distillation really work?").

Per evaluation, on the test set:

* ``test_agreement``: top-1 agreement, the % of test samples where the student's and the teacher's argmax agree;
* ``test_kl_teacher``: KL(teacher || student) at T = 1, in nats: per sample
  sum_c p_t(c) (log p_t(c) - log p_s(c)), averaged over the test set;
* ``test_ece``: the expected calibration error of the student, in percent: 15 equal-width confidence
  bins over [0, 1] (bin k holds the samples whose max softmax probability lies in (k/15, (k+1)/15]),
  ECE = 100 * sum_k |acc_k - conf_k| * n_k / n.

The teacher's side of these (its log-probabilities, predictions, and its own ECE) is a ``TeacherTest``:
computed on first use, by one pass of the frozen teacher over the test batches, and kept for every later
evaluation of every run that holds the same object (``train_cohort`` makes one per cohort, or uses the one its
caller keeps for every cohort of that teacher: ``train_cohort(teacher_test=...)``). That is exact:
a frozen teacher is in eval mode (BatchNorm reads its running statistics, which nothing updates) and the
test batches are neither shuffled nor augmented, so each pass would give the same bits; a solo run makes
its own pass over the same batches (same batch size, same order) and gets the same bits too.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ECE_BINS", "CalibrationBins", "TeacherBatch", "TeacherTest", "agreement_count", "kl_sum",
           "ece_percent"]

ECE_BINS = 15


class CalibrationBins:
    """Running per-bin sums (samples, confidence, correct) over batches; ``ece()`` at the end."""

    def __init__(self, bins: int = ECE_BINS):
        self.bins = bins
        self.count = torch.zeros(bins, dtype=torch.float64)
        self.confidence = torch.zeros(bins, dtype=torch.float64)
        self.correct = torch.zeros(bins, dtype=torch.float64)

    def add(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        probs = F.softmax(logits.float(), dim=1)
        conf, pred = probs.max(dim=1)
        # bin k = (k/B, (k+1)/B]: ceil(conf * B) - 1; a confidence is >= 1/C > 0, so never below bin 0
        index = (torch.ceil(conf.double() * self.bins).long() - 1).clamp(0, self.bins - 1).cpu()
        self.count += torch.bincount(index, minlength=self.bins).double()
        self.confidence += torch.bincount(index, weights=conf.double().cpu(), minlength=self.bins)
        self.correct += torch.bincount(index, weights=(pred == labels).double().cpu(), minlength=self.bins)

    def ece(self) -> float:
        """ECE in percent: sum over bins of |correct_k - confidence_k| / n (= |acc_k - conf_k| * n_k / n)."""
        n = float(self.count.sum())
        return 100.0 * float((self.correct - self.confidence).abs().sum()) / n if n else float("nan")


def ece_percent(logits: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> float:
    """The ECE (percent) of ``logits`` against ``labels`` in one call."""
    acc = CalibrationBins(bins)
    acc.add(logits, labels)
    return acc.ece()


def agreement_count(student_logits: torch.Tensor, teacher_pred: torch.Tensor) -> int:
    """Samples of a batch where the student's argmax is the teacher's."""
    return int((student_logits.argmax(dim=1) == teacher_pred).sum())


def kl_sum(student_logits: torch.Tensor, teacher_log_probs: torch.Tensor) -> float:
    """Sum over the batch of KL(teacher || student) at T = 1 (nats); divide by the test-set size for the mean.
    ``log_target``: a teacher probability that underflows to 0 contributes 0, never 0 * inf."""
    student_log_probs = F.log_softmax(student_logits.float(), dim=1)
    return float(F.kl_div(student_log_probs, teacher_log_probs, reduction="sum", log_target=True))


class TeacherBatch(NamedTuple):
    """The frozen teacher's outputs on one test batch: log-probabilities at T = 1 (float32, samples x classes)
    and predictions (argmax). A metric that needs the teacher (``kdcore.metrics``) gets one per batch."""

    log_probs: torch.Tensor
    pred: torch.Tensor


class TeacherTest:
    """A frozen teacher's test-set outputs, one pass per eval batch size, on first use: per batch its
    log-probabilities (float32, on the device: test samples x classes) and predictions, and its ECE."""

    def __init__(self, teacher: nn.Module, data, device: torch.device):
        self.teacher, self.data, self.device = teacher, data, device
        self._batches: dict[int, list[TeacherBatch]] = {}
        self._ece: dict[int, float] = {}
        self.passes = 0  # teacher passes over the test set made so far

    @torch.no_grad()
    def _compute(self, batch_size: int) -> None:
        out, bins = [], CalibrationBins()
        for x, y in self.data.test_batches(batch_size, self.device):
            logits = self.teacher(x)
            bins.add(logits, y)
            out.append(TeacherBatch(F.log_softmax(logits.float(), dim=1), logits.argmax(dim=1)))
        self._batches[batch_size], self._ece[batch_size] = out, bins.ece()
        self.passes += 1

    def batches(self, batch_size: int) -> list[TeacherBatch]:
        """[TeacherBatch(log-probabilities, predictions)] of the test batches of ``batch_size``, in test order."""
        if batch_size not in self._batches:
            self._compute(batch_size)
        return self._batches[batch_size]

    def ece(self, batch_size: int) -> float:
        """The teacher's ECE (percent) on the test set."""
        self.batches(batch_size)
        return self._ece[batch_size]
