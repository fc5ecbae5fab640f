"""Test-set metrics: one definition each, which the loop, the records, TensorBoard and the report pick up.

A ``Metric`` says what a metric is called everywhere and how it is computed:

* ``key``: the field of every evaluated history entry (``runs/<run_id>.json``, ``metrics.jsonl``), e.g.
  ``"test_agreement"``;
* ``tag``: its TensorBoard (and W&B) tag, e.g. ``"fidelity/agreement"`` (``kdcore.curves``);
* ``column``, ``title``, ``digits``: its column of the report's per-run frame (the last epoch's value,
  ``reports.aggregate.FIDELITY_COLUMNS``) and its table in the report's fidelity section
  (``reports.tables.fidelity_section``); a metric without a ``column`` (test top-1 and top-5, which the
  accuracy tables report from the record's ``metrics``) has no table there;
* ``needs_teacher``: computed only where the run has a teacher (the entry has no such field without one);
* ``higher_is_better``, ``description``: how to read it;
* ``teacher_info``: the key of the record's ``teacher_info`` that holds the teacher's own value of the metric,
  shown as the table's teacher row (the ECE's ``"ece"``); ``None``: no teacher row;
* ``start``: a function of no argument that returns a fresh accumulator over the test batches: one evaluation
  calls ``start()``, then ``add(logits, labels, teacher)`` for each test batch in order (the student's logits,
  the batch's labels, and the teacher's ``kdcore.fidelity.TeacherBatch`` for that batch, or ``None`` where the
  run has no teacher), then ``value()`` for the number the entry records.

``register_metric`` adds one (a duplicate name, key, tag or column raises); ``list_metrics`` gives them in
registration order, which is the order of the report's fidelity tables; a history entry holds the metrics
without a teacher first, then those that need one (``entry_order``), each group in registration order. This
module registers the evaluation metrics kdbench always had: ``top1``, ``top5``, ``agreement``,
``kl_teacher``, ``ece`` (entries: ``test_top1``, ``test_top5``, ``test_ece``, ``test_agreement``,
``test_kl_teacher``, as before); the numbers are those of ``kdcore.fidelity``, accumulated in test order as
before, bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch

from kdcore.fidelity import CalibrationBins, TeacherBatch, agreement_count, kl_sum

__all__ = ["Accumulator", "Metric", "register_metric", "unregister_metric", "list_metrics", "entry_order",
           "get_metric", "TopK", "ECE", "Agreement", "KLTeacher"]


class Accumulator(Protocol):
    """One evaluation of one metric: ``add`` each test batch in order, then ``value``."""

    def add(self, logits: torch.Tensor, labels: torch.Tensor, teacher: TeacherBatch | None) -> None: ...

    def value(self) -> float: ...


@dataclass(frozen=True)
class Metric:
    """A test-set metric (see the module's docstring). ``key`` defaults to ``test_<name>``, ``tag`` to
    ``test/<name>``, ``title`` to ``description``."""

    name: str
    start: Callable[[], Accumulator]
    description: str
    key: str = ""
    tag: str = ""
    column: str | None = None
    title: str = ""
    digits: int = 2
    needs_teacher: bool = False
    higher_is_better: bool = True
    teacher_info: str | None = None

    def __post_init__(self):
        if not self.name or not self.name.isidentifier():
            raise ValueError(f"a metric's name is an identifier (letters, digits, _): {self.name!r}")
        for attr, default in (("key", f"test_{self.name}"), ("tag", f"test/{self.name}"),
                              ("title", self.description)):
            if not getattr(self, attr):
                object.__setattr__(self, attr, default)


_REGISTRY: dict[str, Metric] = {}


def register_metric(metric: Metric) -> Metric:
    """Add ``metric`` to the metrics every evaluation computes; returns it. Raises ``ValueError`` where another
    registered metric has its name, key, tag or column."""
    for other in _REGISTRY.values():
        for attr in ("name", "key", "tag", "column"):
            mine = getattr(metric, attr)
            if mine is not None and mine == getattr(other, attr):
                raise ValueError(f"metric {metric.name!r}: {attr} {mine!r} is already metric {other.name!r}'s")
    _REGISTRY[metric.name] = metric
    return metric


def unregister_metric(name: str) -> Metric:
    """Remove the metric ``name`` (a test's, or a plugin's); returns it. ``KeyError`` if none has that name."""
    return _REGISTRY.pop(name)


def list_metrics(teacher: bool = True) -> list[Metric]:
    """The registered metrics in registration order; ``teacher=False``: those a run without a teacher has."""
    return [m for m in _REGISTRY.values() if teacher or not m.needs_teacher]


def entry_order(teacher: bool = True) -> list[Metric]:
    """The metrics an evaluation computes, in the order of the history entry's fields: those without a teacher
    first, then (``teacher``: the run has one) those that need it."""
    return list_metrics(teacher=False) + ([m for m in _REGISTRY.values() if m.needs_teacher] if teacher else [])


def get_metric(name: str) -> Metric:
    """The registered metric ``name`` (``KeyError`` if none)."""
    return _REGISTRY[name]


# ---------------------------------------------------------------------------- kdbench's metrics
class TopK:
    """Top-k accuracy (percent), top-k capped at the class count. Each evaluation ranks the top-5 once per batch
    (``logits.topk(min(5, classes))``) and reads top-1 as its first column, as kdbench always has."""

    def __init__(self, k: int):
        self.k, self.correct, self.total = k, 0, 0

    def add(self, logits: torch.Tensor, labels: torch.Tensor, teacher: TeacherBatch | None) -> None:
        hit = logits.topk(min(5, logits.shape[1]), dim=1).indices == labels[:, None]
        self.correct += int((hit[:, 0] if self.k == 1 else hit[:, :self.k].any(dim=1)).sum())
        self.total += labels.numel()

    def value(self) -> float:
        return 100.0 * self.correct / self.total


class ECE:
    """The student's expected calibration error (percent, ``kdcore.fidelity.CalibrationBins``)."""

    def __init__(self):
        self.bins = CalibrationBins()

    def add(self, logits: torch.Tensor, labels: torch.Tensor, teacher: TeacherBatch | None) -> None:
        self.bins.add(logits, labels)

    def value(self) -> float:
        return self.bins.ece()


class Agreement:
    """% of test samples where the student's argmax is the teacher's."""

    def __init__(self):
        self.agree, self.total = 0, 0

    def add(self, logits: torch.Tensor, labels: torch.Tensor, teacher: TeacherBatch | None) -> None:
        self.agree += agreement_count(logits, teacher.pred)
        self.total += labels.numel()

    def value(self) -> float:
        return 100.0 * self.agree / self.total


class KLTeacher:
    """KL(teacher || student) at T = 1, nats, mean over the test set."""

    def __init__(self):
        self.kl, self.total = 0.0, 0

    def add(self, logits: torch.Tensor, labels: torch.Tensor, teacher: TeacherBatch | None) -> None:
        self.kl += kl_sum(logits, teacher.log_probs)
        self.total += labels.numel()

    def value(self) -> float:
        return self.kl / self.total


register_metric(Metric("top1", lambda: TopK(1), "% of test samples whose top-1 class is the label"))
register_metric(Metric("top5", lambda: TopK(5), "% of test samples whose label is among the top 5 classes "
                       "(top-k capped at the class count)"))
register_metric(Metric("agreement", Agreement, "% of test samples where the student's top-1 class is the teacher's",
                       tag="fidelity/agreement", column="agreement_last",
                       title="Top-1 agreement with the teacher (%)", needs_teacher=True))
register_metric(Metric("kl_teacher", KLTeacher, "KL(teacher || student) of the softmax outputs at T = 1, nats, "
                       "mean over the test samples", tag="fidelity/kl_teacher", column="kl_teacher_last",
                       title="KL(teacher ‖ student) at T = 1 (nats)", digits=3, needs_teacher=True,
                       higher_is_better=False))
register_metric(Metric("ece", ECE, "the student's expected calibration error, 15 equal-width confidence bins, "
                       "percent", column="ece_last", title="Expected calibration error (%)",
                       higher_is_better=False, teacher_info="ece"))
