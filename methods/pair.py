"""pair: the pair (contrastive) variant of Oki, Abe, Miyao, Kurita 2020,
"Triplet Loss for Knowledge Distillation" (IJCNN 2020, arXiv 2004.08116).

The paper proposes distillation with pairs as well as triplets of training
samples, but the authors' repository (github.com/i13abe/Triplet-Loss-for-
Knowledge-Distillation) publishes only the triplet version. This is OUR
READING, not the authors' code: the standard contrastive loss of Hadsell,
Chopra, LeCun 2006 ("Dimensionality Reduction by Learning an Invariant
Mapping") applied to the triplet method's pairs, on logits:

    positive pair (t(x), s(x))   similar:    pulled together, d_pos^2
    negative pair (t(x), s(x-))  dissimilar: pushed beyond the margin,
                                             max(0, margin - d_neg)^2
    d(u, v) = || u - v + eps ||_2, eps = 1e-6 (as the triplet method,
              torch.nn.functional.pairwise_distance)
    pair_i  = ( d_pos_i^2 + max(0, margin - d_neg_i)^2 ) / 2
    pair    = mean_i pair_i          over the anchors that have a negative
    loss = gamma * CE(s(x), y) + weight * pair

The 1/2 is Hadsell et al.'s (their L_S = 1/2 D^2, L_D = 1/2 max(0, m - D)^2);
each anchor contributes one positive and one negative pair, so the two halves
of the sum are the two pairs. The teacher logits are detached; ``x-`` is drawn
exactly as in ``triplet`` (``negatives`` = "dataset": one training sample of
another class per anchor, uniform, fresh each step, student run on it in a
separate train-mode forward; "batch": a uniform other-class batch member,
anchors without one dropped from the mean, which happens only when the whole
batch is one class). The sampling code is ``triplet.py``'s.

Defaults, taken from the triplet method since the authors give none for
pairs: gamma = 1.0 (the CE weight of the authors' ``network_fit.py``),
weight = 2.0 (``example.py`` ``KD_LAMBDA``), margin = 5.0 (``example.py``
``TRIPLET_MARGINE``), negatives = "dataset" (``kd_triplet_datasets.py``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Choice, Range, register_method
from .triplet import NEGATIVE_MODES, PAIRWISE_EPS, _NegativesDistiller, masked_mean


def contrastive_per_sample(anchor, positive, negative, margin: float) -> torch.Tensor:
    """(d(a,p)^2 + max(0, margin - d(a,n))^2) / 2 per row."""
    d_pos = F.pairwise_distance(anchor, positive, p=2.0, eps=PAIRWISE_EPS)
    d_neg = F.pairwise_distance(anchor, negative, p=2.0, eps=PAIRWISE_EPS)
    return 0.5 * (d_pos.pow(2) + torch.clamp_min(margin - d_neg, 0.0).pow(2))


@register_method("pair")
class Pair(_NegativesDistiller):
    defaults = {"gamma": 1.0, "weight": 2.0, "margin": 5.0, "negatives": "dataset"}
    ranges = {"gamma": Range(ge=0), "weight": Range(ge=0), "margin": Range(ge=0),
              "negatives": Choice(*NEGATIVE_MODES)}
    needs_features = False

    def loss_weights(self):
        return {"pair": self.weight}

    def losses(self, student, teacher, batch):
        anchor, positive, negative, valid = self._triple(student, teacher, batch)
        return {"pair": masked_mean(contrastive_per_sample(anchor, positive, negative, self.margin), valid)}
