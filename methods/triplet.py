"""triplet: Oki, Abe, Miyao, Kurita 2020, "Triplet Loss for Knowledge Distillation" (IJCNN 2020, arXiv 2004.08116).

Authors' code: github.com/i13abe/Triplet-Loss-for-Knowledge-Distillation.

The triplet is built on logits: anchor ``a = t(x)`` (teacher), positive ``p =
s(x)`` (student, same image), negative ``n = s(x-)`` (student on an image
``x-`` of a *different class* than ``x``). As implemented (the authors'
criterion ``nn.TripletMarginLoss(margin=MARGIN)``: p=2, eps=1e-6, swap=False,
reduction="mean"):

    d(u, v) = || u - v + eps ||_2         eps = 1e-6 added to the difference,
                                          as torch.nn.functional.pairwise_distance
    triplet_i = max(0, d(a_i, p_i) - d(a_i, n_i) + margin)
    triplet   = mean_i triplet_i          over the anchors that have a negative
    loss = gamma * CE(s(x), y) + weight * triplet [+ kl * KL_T(t(x) || s(x))]

The teacher logits are detached (the authors' teacher is never stepped, so
this changes nothing). The student's negative logits come from a separate
student forward in train mode, as in the authors' trainers.

Negatives (``negatives``):
  "dataset" (default, the authors' sampling): for every anchor, one training
      sample drawn uniformly over all training samples whose label differs
      from the anchor's, fresh at every step (the authors' training dataset,
      ``kd_triplet_datasets.py`` ``KDTripletDataset.__getitem__``, calls
      ``np.random.choice`` over "all indices with another label" each time a
      sample is loaded, i.e. per sample, per epoch). ``prepare`` returns it as
      ``extra_index`` and the harness runs the student on it (augmented).
      The draw is ``floor(u * n_other)`` with ``u`` float64 from the run's
      generator, into the training indices of the other classes (bias < 2^-40).
  "batch": no extra forward; each anchor takes, uniformly, one batch member of
      another class and reuses its student logits. An anchor with no
      other-class member in the batch is dropped from the mean; that can only
      happen when the whole batch is one class, and then the term is 0.

Which soft term comes with the triplet differs between the two versions of
the authors' code:
  2020 (``example.py`` + ``network_fit.py``, the code of the paper): the
      criterion named ``soft_criterion`` is ``nn.CrossEntropyLoss()`` on the
      *labels* (a hard loss despite the name) and
      ``loss = soft_loss + kd_lambda * trip_loss`` with ``KD_LAMBDA = 2.0``,
      ``TRIPLET_MARGINE = 5.0``: CE (weight 1) + 2 * triplet, no KL at all.
  2022 (``student.py`` + ``utils/knowledgedistillationtriplet.py``):
      ``soft_criterion = KLDivLoss(reduction='batchmean')``
      (``utils/kldivloss.py``: ``kl_div(log_softmax(s), softmax(t))``, no
      temperature, i.e. T = 1, no T^2) and
      ``loss = soft_loss + lam * hard_loss + triplet_lam * triplet_loss`` with
      ``LAMBDA = 1.0`` (``lam`` weighs the hard CE, not the KL),
      ``TriLAMBDA = 2.0``, ``MARGIN = 5.0``: KL (weight 1) + CE + 2 * triplet.
Defaults follow the 2020 code: gamma = 1.0 (implicit CE weight of
``network_fit.py``), weight = 2.0 (``example.py`` ``KD_LAMBDA``; 2022
``student.py`` ``TriLAMBDA``), margin = 5.0 (``example.py``
``TRIPLET_MARGINE``; 2022 ``MARGIN``), kl = 0.0. ``kl = 1.0`` gives the 2022
objective: the term ``"triplet_kl"`` is ``KL(softmax(t/T) || softmax(s/T))``,
summed over classes, batch mean, times T^2 (``kd.kd_loss``), with ``kl_T =
1.0``, where it equals the authors' KLDivLoss exactly.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .base import Batch, BuildContext, Choice, Distiller, Range, register_method
from .kd import kd_loss

NEGATIVE_MODES = ("dataset", "batch")
PAIRWISE_EPS = 1e-6  # torch.nn.TripletMarginLoss / pairwise_distance default


class OtherClassSampler:
    """Draws, per anchor label, one training index uniformly over the other classes.

    The training indices are sorted by label once; for an anchor of class c
    the other-class indices are the sorted list with c's block removed, so a
    uniform position ``r`` in ``[0, N - n_c)`` maps to ``r`` (before the
    block) or ``r + n_c`` (after it).
    """

    def __init__(self, train_labels: torch.Tensor):
        labels = train_labels.detach().to("cpu", torch.long).reshape(-1)
        if labels.numel() == 0:
            raise ValueError("OtherClassSampler: empty training set")
        self.order = torch.argsort(labels, stable=True)
        size = int(labels.max()) + 1 if labels.numel() else 0
        self.counts = torch.bincount(labels, minlength=size)
        self.starts = torch.cumsum(self.counts, 0) - self.counts
        self.num = labels.numel()

    def draw(self, y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        y = y.detach().to("cpu", torch.long).reshape(-1)
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.counts.numel()):
            raise ValueError("OtherClassSampler: anchor label not in the training labels")
        n_own = self.counts[y]
        n_other = self.num - n_own
        if bool((n_other <= 0).any()):
            raise ValueError("OtherClassSampler: an anchor's class is the whole training set; no negative")
        u = torch.rand(y.numel(), generator=generator, dtype=torch.float64, device=generator.device).cpu()
        r = torch.floor(u * n_other.to(torch.float64)).to(torch.long)
        r = torch.minimum(r, n_other - 1)  # u < 1, kept as a guard
        start = self.starts[y]
        pos = torch.where(r < start, r, r + n_own)
        return self.order[pos]


def draw_in_batch(y: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """For each anchor, a uniform position among the batch members of another class.

    Returns ``(pos, valid)``: ``pos[i]`` indexes the batch; ``valid[i]`` is
    False when no member has another class (then ``pos[i]`` is ``i``, unused).
    """
    y = y.detach().reshape(-1)
    other = y.unsqueeze(0) != y.unsqueeze(1)  # other[i, j]: j is a candidate for anchor i
    n_other = other.sum(1)
    u = torch.rand(y.numel(), generator=generator, dtype=torch.float64, device=generator.device).to(y.device)
    r = torch.floor(u * n_other.to(torch.float64)).to(torch.long)
    r = torch.minimum(r, (n_other - 1).clamp_min(0))
    # the (r+1)-th candidate of row i sits where the running count first exceeds r
    pos = (other.long().cumsum(1) <= r.unsqueeze(1)).sum(1)
    valid = n_other > 0
    pos = torch.where(valid, pos, torch.arange(y.numel(), device=y.device))
    return pos, valid


def prepare_negatives(
    method: str, mode: str, sampler: OtherClassSampler | None, batch: Batch, generator: torch.Generator
) -> dict[str, Any]:
    """What ``prepare`` returns for a negatives mode (shared by triplet and pair)."""
    if mode == "dataset":
        assert sampler is not None
        return {"extra_index": sampler.draw(batch.y, generator)}
    pos, valid = draw_in_batch(batch.y, generator)
    return {f"{method}_negative": pos, f"{method}_negative_valid": valid}


def negative_logits(
    method: str, mode: str, student_logits: torch.Tensor, batch: Batch
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Student logits of each anchor's negative, and the mask of anchors that have one (None: all)."""
    if mode == "dataset":
        extra = batch.extras.get("extra_student")
        if extra is None:
            raise KeyError(f"{method}: batch.extras has no 'extra_student' (negatives='dataset')")
        neg = extra.logits
        if neg.shape != student_logits.shape:
            raise ValueError(f"{method}: negative logits {tuple(neg.shape)} vs anchors {tuple(student_logits.shape)}")
        return neg, None
    pos = batch.extras[f"{method}_negative"].to(student_logits.device)
    valid = batch.extras[f"{method}_negative_valid"].to(student_logits.device)
    return student_logits[pos], valid


def masked_mean(per_sample: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Mean over the anchors that have a negative; 0 (still in the graph) when none has."""
    if valid is None:
        return per_sample.mean()
    w = valid.to(per_sample.dtype)
    return (per_sample * w).sum() / w.sum().clamp_min(1.0)


def triplet_per_sample(anchor, positive, negative, margin: float) -> torch.Tensor:
    """max(0, d(a,p) - d(a,n) + margin) per row, d as nn.TripletMarginLoss (p=2, eps=1e-6, no swap)."""
    d_pos = F.pairwise_distance(anchor, positive, p=2.0, eps=PAIRWISE_EPS)
    d_neg = F.pairwise_distance(anchor, negative, p=2.0, eps=PAIRWISE_EPS)
    return torch.clamp_min(d_pos - d_neg + margin, 0.0)


class _NegativesDistiller(Distiller):
    """Shared plumbing of triplet / pair: sampler, prepare, batch coupling of in-batch negatives."""

    couples_batch = True  # with negatives="batch" only: see coupling()
    coupling_note = "negatives='batch' draws each anchor's negative among the batch (under DDP: its rank's slice)"

    @classmethod
    def coupling(cls, hparams: dict[str, Any]) -> str | None:
        # "dataset": every anchor's negative is drawn independently of the other samples
        return cls.coupling_note if hparams.get("negatives", cls.defaults["negatives"]) == "batch" else None

    def __init__(self, ctx: BuildContext, **hparams: Any):
        super().__init__(ctx, **hparams)
        self._sampler = OtherClassSampler(ctx.train_labels) if self.hparams["negatives"] == "dataset" else None

    def prepare(self, batch: Batch, generator: torch.Generator) -> dict[str, Any]:
        return prepare_negatives(self.name, self.hparams["negatives"], self._sampler, batch, generator)

    def _triple(self, student, teacher, batch):
        anchor = teacher.logits.detach()
        positive = student.logits
        negative, valid = negative_logits(self.name, self.hparams["negatives"], positive, batch)
        return anchor, positive, negative, valid


@register_method("triplet")
class Triplet(_NegativesDistiller):
    defaults = {
        "gamma": 1.0,
        "weight": 2.0,
        "margin": 5.0,
        "kl": 0.0,
        "kl_T": 1.0,
        "negatives": "dataset",
    }
    ranges = {
        "gamma": Range(ge=0),
        "weight": Range(ge=0),
        "margin": Range(ge=0),
        "kl": Range(ge=0),
        "kl_T": Range(gt=0),
        "negatives": Choice(*NEGATIVE_MODES),
    }
    needs_features = False

    def loss_weights(self):
        w = {"triplet": self.weight}
        if self.kl > 0:
            w["triplet_kl"] = self.kl
        return w

    def losses(self, student, teacher, batch):
        anchor, positive, negative, valid = self._triple(student, teacher, batch)
        out = {"triplet": masked_mean(triplet_per_sample(anchor, positive, negative, self.margin), valid)}
        if self.kl > 0:
            out["triplet_kl"] = kd_loss(student.logits, anchor, self.kl_T)
        return out
