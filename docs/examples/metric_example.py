"""A new test-set metric in one file: the student's negative log-likelihood on the test set (nats per sample).

Importing this file registers it; from then on every evaluation records ``test_nll`` in the run's history
entries (``runs/<run_id>.json``, ``metrics.jsonl``), TensorBoard draws it as ``test/nll``, and the report's
fidelity section has a table "Test negative log-likelihood (nats)" (column ``nll_last``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kdcore.fidelity import TeacherBatch
from kdcore.metrics import Metric, register_metric


class NLL:
    """Sum of -log p_student(label) over the test batches, divided by the number of test samples."""

    def __init__(self):
        self.total_nll, self.count = 0.0, 0

    def add(self, logits: torch.Tensor, labels: torch.Tensor, teacher: TeacherBatch | None) -> None:
        self.total_nll += float(F.cross_entropy(logits.float(), labels, reduction="sum"))
        self.count += labels.numel()

    def value(self) -> float:
        return self.total_nll / self.count


NLL_METRIC = register_metric(Metric(
    "nll", NLL,
    description="mean over the test samples of -ln p_student(label), in nats",
    column="nll_last",  # the report's fidelity section gets a table for it
    title="Test negative log-likelihood (nats)",
    digits=3,
    higher_is_better=False,
))  # key "test_nll" and tag "test/nll" by default
