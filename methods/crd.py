"""crd: Tian, Krishnan, Isola 2020, "Contrastive Representation Distillation" (ICLR).

As implemented (RepDistiller ``crd/criterion.py`` CRDLoss / ContrastLoss / Embed,
``crd/memory.py`` ContrastMemory, ``dataset/cifar100.py`` CIFAR100InstanceSample
in mode ``"exact"``):

    s = normalize(W_s e_s + b_s),  t = normalize(W_t e_t + b_t)   (feat_dim each)
    e_s, e_t: student / teacher ``ModelOutput.embedding`` (RepDistiller feat[-1])

    Two memory banks of size n_data x feat_dim: M_s (student side, RepDistiller
    memory_v1) and M_t (teacher side, memory_v2). For sample i of the batch
    with contrast row c_i = (i, j_1, ..., j_K) (the positive first):

    teacher anchor:  h_t(i, c) = exp(<M_s[c], t_i> / T) / Z_t
    student anchor:  h_s(i, c) = exp(<M_t[c], s_i> / T) / Z_s

    Z_s, Z_t are set on the first call to mean(exp-scores) * n_data of that
    call and kept fixed afterwards (no gradient flows through them).

    NCE loss of one side (ContrastLoss, Pn = 1 / n_data, eps = 1e-7):
        L(h) = -1/B sum_i [ log(h_i0 / (h_i0 + K Pn + eps))
                           + sum_{k=1..K} log(K Pn / (h_ik + K Pn + eps)) ]
    crd = L(h_t) + L(h_s)
    loss = gamma * CE(s, y) + beta * crd

    After the scores are computed the positive rows are updated, under no_grad:
        M_s[i] <- normalize(m M_s[i] + (1 - m) s_i),
        M_t[i] <- normalize(m M_t[i] + (1 - m) t_i).

The banks start uniform in [-stdv, stdv], stdv = 1 / sqrt(feat_dim / 3), drawn
from torch's global RNG when the method is built (as RepDistiller). Banks and
Z constants are buffers (Z = -1 means "not set yet"), so they checkpoint with
the method; the two Embed heads are parameters and train with the student.

Negatives (mode "exact"): for every sample, K dataset indices drawn uniformly
from the training samples of the other classes, without replacement, unless
K exceeds that pool (then with replacement), exactly RepDistiller's
``replace = k > len(cls_negative[target])``. RepDistiller draws them in the
dataset's ``__getitem__`` with numpy's global RNG; here ``prepare`` draws them
once per step for the whole batch with the run's own ``torch.Generator`` --
the same distribution (a uniformly random ordered K-tuple of distinct
other-class indices), a different random stream.

Scores are the same dot products as ContrastMemory's index_select + bmm; while
n_data <= 32 (K+1) (CIFAR: 50000 vs 16385) they are read off the dense product
bank @ v^T instead, which avoids materialising B (K+1) bank rows.

Defaults are RepDistiller's CRD row: ``train_student.py`` argparse defaults
``--feat_dim 128 --nce_k 16384 --nce_t 0.07 --nce_m 0.5 --mode exact`` and
``scripts/run_cifar_distill.sh`` ``--distill crd -r 1 -a 0 -b 0.8``:
gamma = 1, beta = 0.8 (alpha = 0: no KD term; use ``crd+kd`` for that row).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .base import BuildContext, Distiller, Range, register_method

NCE_EPS = 1e-7
# above this pool/K ratio, drawing without replacement by rejection of repeats
# is cheaper than a full permutation of the pool (same distribution either way)
_PERMUTE_RATIO = 8
# up to this n_data/(K+1) ratio the scores are read off the dense product
# bank @ v^T instead of gathering B*(K+1) bank rows for a bmm: same numbers,
# ~7x faster on CPU at the CIFAR-100 defaults (n_data 50000, K+1 16385)
_DENSE_RATIO = 32


class Embed(nn.Module):
    """Linear projection to ``dim_out`` followed by L2 normalisation (RepDistiller ``Embed``)."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear(x.flatten(1))
        return x / x.pow(2).sum(1, keepdim=True).sqrt()


def nce_loss(scores: torch.Tensor, n_data: int) -> torch.Tensor:
    """RepDistiller ``ContrastLoss``: ``scores`` is (B, K+1), the positive in column 0."""
    bsz, k = scores.shape[0], scores.shape[1] - 1
    m_pn = k / float(n_data)
    p_pos = scores[:, 0]
    p_neg = scores[:, 1:]
    log_d1 = torch.log(p_pos / (p_pos + (m_pn + NCE_EPS)))
    log_d0 = torch.log(m_pn / (p_neg + (m_pn + NCE_EPS)))
    return -(log_d1.sum() + log_d0.sum()) / bsz


class NegativeSampler:
    """Draws, per anchor, K indices of training samples of other classes ("exact" mode).

    Samples are grouped by class (``order`` = dataset indices sorted by label);
    the pool of class c is ``order`` without the segment [start_c, start_c + count_c),
    so a uniform draw u in [0, N - count_c) maps to ``order[u + count_c * (u >= start_c)]``.
    """

    def __init__(self, labels: torch.Tensor, k: int):
        labels = labels.detach().cpu().long().flatten()
        if labels.numel() == 0:
            raise ValueError("crd: empty training set")
        if int(labels.min()) < 0:
            raise ValueError("crd: negative class labels")
        self.k = int(k)
        self.n = labels.numel()
        counts = torch.bincount(labels)
        self.labels = labels
        self.order = torch.argsort(labels, stable=True)
        self.start = torch.cumsum(counts, 0) - counts
        self.count = counts
        self._dev_cache: dict[torch.device, tuple[torch.Tensor, ...]] = {}

    def _tables(self, device: torch.device):
        if device not in self._dev_cache:
            self._dev_cache[device] = tuple(
                t.to(device) for t in (self.labels, self.order, self.start, self.count)
            )
        return self._dev_cache[device]

    def draw(self, index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(B, K+1) LongTensor on ``index.device``: column 0 = ``index``, then K negatives."""
        dev = generator.device
        labels, order, start, count = self._tables(dev)
        idx = index.detach().to(dev).long().flatten()
        y = labels[idx]
        pool = self.n - count[y]  # (B,)
        if bool((pool <= 0).any()):
            raise ValueError("crd: a class has no negatives (the training set has a single class)")
        k = self.k
        u = torch.empty(idx.numel(), k, dtype=torch.long, device=dev)
        pool_list = pool.tolist()
        for b, p in enumerate(pool_list):
            if k > p:  # RepDistiller: replace = k > len(cls_negative[target])
                u[b] = _uniform_ints(p, (k,), generator, dev)
            elif p <= _PERMUTE_RATIO * k:
                u[b] = torch.randperm(p, generator=generator, device=dev)[:k]
            else:
                u[b] = _distinct_uniform_ints(p, k, generator, dev)
        # skip the anchor's own class segment
        s = start[y].unsqueeze(1)
        c = count[y].unsqueeze(1)
        neg = order[u + c * (u >= s)]
        out = torch.cat([idx.unsqueeze(1), neg], dim=1)
        return out.to(index.device)


def _uniform_ints(high: int, shape, generator, device) -> torch.Tensor:
    return torch.randint(0, high, shape, generator=generator, device=device)


def _distinct_uniform_ints(high: int, k: int, generator, device) -> torch.Tensor:
    """k distinct ints, uniform over ordered k-tuples of [0, high): draw iid, redraw repeats.

    Every round redraws the positions that repeat an earlier position's value;
    the process is invariant under relabelling [0, high), so every ordered tuple of
    distinct values is equally likely (the law of ``randperm(high)[:k]``).
    """
    vals = _uniform_ints(high, (k,), generator, device)
    while True:
        sorted_vals, perm = torch.sort(vals, stable=True)
        dup = torch.zeros(k, dtype=torch.bool, device=device)
        dup[1:] = sorted_vals[1:] == sorted_vals[:-1]
        if not bool(dup.any()):
            return vals
        redo = perm[dup]  # later positions of repeated values (stable sort keeps the first)
        vals[redo] = _uniform_ints(high, (redo.numel(),), generator, device)


def _bank_scores(bank: torch.Tensor, v: torch.Tensor, contrast_index: torch.Tensor) -> torch.Tensor:
    """(B, K+1) dot products <bank[contrast_index[i, j]], v[i]>; the bank is a constant.

    Both ways copy the bank rows they read (the bank is updated in place right
    after, and backward needs the values the scores were computed from).
    """
    bsz, kp1 = contrast_index.shape
    if bank.shape[0] <= _DENSE_RATIO * kp1:
        return (v @ bank.detach().clone().t()).gather(1, contrast_index)
    rows = bank.detach().index_select(0, contrast_index.reshape(-1)).view(bsz, kp1, -1)
    return torch.bmm(rows, v.unsqueeze(2)).squeeze(2)


@register_method("crd")
class CRD(Distiller):
    defaults = {
        "gamma": 1.0,
        "beta": 0.8,
        "feat_dim": 128,
        "nce_k": 16384,
        "nce_t": 0.07,
        "nce_m": 0.5,
    }
    ranges = {
        "gamma": Range(ge=0),
        "beta": Range(ge=0),
        "feat_dim": Range(ge=1),
        "nce_k": Range(ge=1),
        "nce_t": Range(gt=0),
        "nce_m": Range(ge=0, le=1),
    }
    needs_features = True
    couples_batch = True
    coupling_note = ("its memory banks and Z constants are updated from each batch "
                     "(under DDP: by each rank with its own slice, with per-rank negatives)")

    def __init__(self, ctx: BuildContext, **hparams):
        super().__init__(ctx, **hparams)
        if ctx.teacher is None:
            raise ValueError("crd needs a teacher")
        s_dim = ctx.student.embedding.flatten(1).shape[1]
        t_dim = ctx.teacher.embedding.flatten(1).shape[1]
        self.n_data = ctx.num_train
        self.embed_s = Embed(s_dim, self.feat_dim)
        self.embed_t = Embed(t_dim, self.feat_dim)
        stdv = 1.0 / math.sqrt(self.feat_dim / 3)
        self.register_buffer(
            "memory_s", torch.rand(self.n_data, self.feat_dim).mul_(2 * stdv).add_(-stdv)
        )
        self.register_buffer(
            "memory_t", torch.rand(self.n_data, self.feat_dim).mul_(2 * stdv).add_(-stdv)
        )
        # normalisation constants; -1 = not set yet (RepDistiller params[2], params[3])
        self.register_buffer("z_s", torch.tensor(-1.0))  # student anchor, Z_v1
        self.register_buffer("z_t", torch.tensor(-1.0))  # teacher anchor, Z_v2
        self.sampler = NegativeSampler(ctx.train_labels, self.nce_k)

    def loss_weights(self):
        return {"crd": self.beta}

    def prepare(self, batch, generator):
        return {"contrast_index": self.sampler.draw(batch.index, generator)}

    def contrast(
        self, s: torch.Tensor, t: torch.Tensor, index: torch.Tensor, contrast_index: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """ContrastMemory: scores (B, K+1) of the student and teacher anchors; updates the banks."""
        s = s.to(self.memory_s.dtype)
        t = t.to(self.memory_t.dtype)
        out_t = torch.exp(_bank_scores(self.memory_s, t, contrast_index) / self.nce_t)
        out_s = torch.exp(_bank_scores(self.memory_t, s, contrast_index) / self.nce_t)
        with torch.no_grad():  # set Z on first use (no host sync: where() instead of if)
            for z, out in ((self.z_s, out_s), (self.z_t, out_t)):
                z.copy_(torch.where(z < 0, out.mean() * self.n_data, z))
        out_s = out_s / self.z_s
        out_t = out_t / self.z_t
        with torch.no_grad():
            m = self.nce_m
            for bank, v in ((self.memory_s, s), (self.memory_t, t)):
                pos = bank.index_select(0, index).mul_(m).add_(v.detach() * (1 - m))
                pos = pos / pos.pow(2).sum(1, keepdim=True).sqrt()
                bank.index_copy_(0, index, pos)
        return out_s, out_t

    def losses(self, student, teacher, batch):
        s = self.embed_s(student.embedding)
        t = self.embed_t(teacher.embedding)
        index = batch.index.to(self.memory_s.device).long()
        contrast_index = batch.extras["contrast_index"].to(self.memory_s.device)
        out_s, out_t = self.contrast(s, t, index, contrast_index)
        return {"crd": nce_loss(out_t, self.n_data) + nce_loss(out_s, self.n_data)}
