"""CRD (methods/crd.py) against RepDistiller's formulas, a hand-computed case, and the sampler."""
from __future__ import annotations

import copy
import math

import pytest
import torch

import methods.crd  # noqa: F401  (registers "crd")
from kdcore.models.registry import ModelOutput
from methods.base import Batch, BuildContext, HyperparameterError, build_method
from methods.crd import CRD, NegativeSampler


# --- helpers -------------------------------------------------------------------
def fake_output(dim: int, batch: int = 2, num_classes: int = 4) -> ModelOutput:
    return ModelOutput(
        logits=torch.zeros(batch, num_classes),
        features=[torch.zeros(batch, 3, 4, 4), torch.zeros(batch, dim, 1, 1)],
        embedding=torch.zeros(batch, dim),
    )


def make_ctx(labels, s_dim: int, t_dim: int, num_classes: int | None = None) -> BuildContext:
    labels = torch.as_tensor(labels, dtype=torch.long)
    nc = num_classes or int(labels.max()) + 1
    return BuildContext(
        student=fake_output(s_dim, num_classes=nc),
        teacher=fake_output(t_dim, num_classes=nc),
        num_classes=nc,
        train_labels=labels,
    )


def build(labels, s_dim, t_dim, **hp) -> CRD:
    torch.manual_seed(0)
    m = build_method("crd", make_ctx(labels, s_dim, t_dim), {"crd": hp})
    assert isinstance(m, CRD)
    return m


def unit_rows(g: torch.Generator, n: int, d: int) -> torch.Tensor:
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    return x / x.norm(dim=1, keepdim=True)


# --- independent reference --------------------------------------------------------
class RepDistillerReference:
    """Float64 transcription of RepDistiller's CRD forward, one sample at a time.

    Sources (HobbitLong/RepDistiller):
      crd/criterion.py  Embed.forward (Linear, then Normalize(2): x / ||x||_2),
                        ContrastLoss.forward (Eq. 18), CRDLoss.forward (s_loss + t_loss)
      crd/memory.py     ContrastMemory.forward:
        out_v2 = exp(memory_v1[idx] . v2 / T)   (teacher anchor, student-side bank)
        out_v1 = exp(memory_v2[idx] . v1 / T)   (student anchor, teacher-side bank)
        if Z_v1 < 0: Z_v1 = mean(out_v1) * n_data     (then the same for Z_v2; fixed afterwards)
        out_v1 /= Z_v1; out_v2 /= Z_v2
        no_grad: memory_v1[y] = normalize(memory_v1[y] * m + v1 * (1 - m)); same for v2.
      ContrastLoss(x): m = K; Pn = 1/n_data;
        log_D1 = log(x[:,0] / (x[:,0] + m*Pn + eps)); log_D0 = log(m*Pn / (x[:,1:] + m*Pn + eps))
        loss = -(sum log_D1 + sum log_D0) / bsz,    eps = 1e-7
    Z is a Python float there (``params[i].item()``): no gradient flows through it.
    """

    def __init__(self, memory_v1, memory_v2, T, momentum, n_data):
        self.memory_v1 = memory_v1.detach().clone().double()
        self.memory_v2 = memory_v2.detach().clone().double()
        self.T, self.momentum, self.n_data = T, momentum, n_data
        self.Z_v1 = -1.0
        self.Z_v2 = -1.0

    @staticmethod
    def embed(x, weight, bias):
        h = x @ weight.double().t() + bias.double()
        return h / h.pow(2).sum(1, keepdim=True).pow(0.5)

    def contrast_loss(self, x):
        bsz, m = x.shape[0], x.shape[1] - 1
        pn = 1.0 / self.n_data
        eps = 1e-7
        total = 0.0
        for i in range(bsz):
            total = total + torch.log(x[i, 0] / (x[i, 0] + m * pn + eps))
            for j in range(1, m + 1):
                total = total + torch.log((m * pn) / (x[i, j] + m * pn + eps))
        return -total / bsz

    def __call__(self, e_s, e_t, ws, bs, wt, bt, y, idx):
        v1 = self.embed(e_s, ws, bs)
        v2 = self.embed(e_t, wt, bt)
        bsz, kp1 = idx.shape
        # index_select(...).detach() there: a copy, constant w.r.t. the graph
        bank_v1 = self.memory_v1.clone()
        bank_v2 = self.memory_v2.clone()
        out_v2 = torch.stack([
            torch.stack([torch.exp(torch.dot(bank_v1[idx[i, j]], v2[i]) / self.T) for j in range(kp1)])
            for i in range(bsz)
        ])
        out_v1 = torch.stack([
            torch.stack([torch.exp(torch.dot(bank_v2[idx[i, j]], v1[i]) / self.T) for j in range(kp1)])
            for i in range(bsz)
        ])
        if self.Z_v1 < 0:
            self.Z_v1 = out_v1.mean().item() * self.n_data
        if self.Z_v2 < 0:
            self.Z_v2 = out_v2.mean().item() * self.n_data
        out_v1 = out_v1 / self.Z_v1
        out_v2 = out_v2 / self.Z_v2
        with torch.no_grad():
            m = self.momentum
            for i in range(bsz):
                r = self.memory_v1[y[i]] * m + v1[i] * (1 - m)
                self.memory_v1[y[i]] = r / r.norm()
                r = self.memory_v2[y[i]] * m + v2[i] * (1 - m)
                self.memory_v2[y[i]] = r / r.norm()
        return self.contrast_loss(out_v1) + self.contrast_loss(out_v2)


def assert_rel_close(actual, expected, rtol=1e-5):
    actual = actual.detach().double()
    expected = expected.detach().double()
    scale = float(expected.abs().max()) if expected.numel() else 1.0
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * scale)


# --- golden values against the reference ------------------------------------------------
@pytest.mark.parametrize("dense_ratio", [0, 10**9], ids=["gather_bmm", "dense"])
def test_golden_values_two_calls_against_repdistiller_reference(monkeypatch, dense_ratio):
    monkeypatch.setattr(methods.crd, "_DENSE_RATIO", dense_ratio)
    n_data, n_cls, s_dim, t_dim, feat_dim, k, bsz = 24, 4, 10, 12, 8, 6, 5
    labels = torch.arange(n_data) % n_cls
    # momentum 0.3, not the default 0.5, so m and 1 - m cannot be swapped unnoticed
    crd = build(labels, s_dim, t_dim, feat_dim=feat_dim, nce_k=k, nce_m=0.3)
    assert crd.nce_t == 0.07

    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        crd.memory_s.copy_(unit_rows(g, n_data, feat_dim).float())
        crd.memory_t.copy_(unit_rows(g, n_data, feat_dim).float())
        for lin in (crd.embed_s.linear, crd.embed_t.linear):
            lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) * 0.3)
            lin.bias.copy_(torch.randn(lin.bias.shape, generator=g) * 0.1)
    ref = RepDistillerReference(crd.memory_s, crd.memory_t, T=0.07, momentum=0.3, n_data=n_data)
    ws, bs = crd.embed_s.linear.weight, crd.embed_s.linear.bias
    wt, bt = crd.embed_t.linear.weight, crd.embed_t.linear.bias

    # call 1 sets Z; call 2 reuses two of call 1's samples (their rows were just updated)
    batches = [torch.tensor([3, 7, 12, 18, 21]), torch.tensor([7, 0, 18, 5, 9])]
    draw_gen = torch.Generator().manual_seed(99)
    for call, index in enumerate(batches):
        e_s = torch.randn(bsz, s_dim, generator=g)
        e_t = torch.randn(bsz, t_dim, generator=g)
        batch = Batch(x=torch.zeros(bsz, 3), y=labels[index], index=index)
        batch.extras = crd.prepare(batch, draw_gen)
        cidx = batch.extras["contrast_index"]
        assert cidx.shape == (bsz, k + 1)
        if call == 1:  # make sure the updated rows are looked up as negatives too
            cidx[1, 1] = 3 if labels[3] != labels[0] else 1
            cidx[4, 2] = 12 if labels[12] != labels[9] else 2

        mem_s_before = crd.memory_s.clone()
        mem_t_before = crd.memory_t.clone()

        es = e_s.clone().requires_grad_(True)
        et = e_t.clone().requires_grad_(True)
        out = crd.losses(
            ModelOutput(logits=torch.zeros(bsz, n_cls), features=[], embedding=es),
            ModelOutput(logits=torch.zeros(bsz, n_cls), features=[], embedding=et),
            batch,
        )
        assert set(out) == {"crd"} and out["crd"].dim() == 0
        gs, gt = torch.autograd.grad(out["crd"], (es, et))

        res = e_s.double().requires_grad_(True)
        ret = e_t.double().requires_grad_(True)
        ref_loss = ref(res, ret, ws, bs, wt, bt, index, cidx)
        rgs, rgt = torch.autograd.grad(ref_loss, (res, ret))

        assert_rel_close(out["crd"], ref_loss)
        assert_rel_close(gs, rgs)
        assert_rel_close(gt, rgt)
        # Z set on call 1 from the scores, unchanged on call 2
        assert crd.z_s.item() == pytest.approx(ref.Z_v1, rel=1e-5)
        assert crd.z_t.item() == pytest.approx(ref.Z_v2, rel=1e-5)

        # memory: the batch rows hold the momentum update, the others are untouched
        assert_rel_close(crd.memory_s, ref.memory_v1)
        assert_rel_close(crd.memory_t, ref.memory_v2)
        untouched = torch.ones(n_data, dtype=torch.bool)
        untouched[index] = False
        assert torch.equal(crd.memory_s[untouched], mem_s_before[untouched])
        assert torch.equal(crd.memory_t[untouched], mem_t_before[untouched])
        with torch.no_grad():
            s = crd.embed_s(e_s).double()
            t = crd.embed_t(e_t).double()
            exp_s = mem_s_before[index].double() * 0.3 + s * 0.7
            exp_t = mem_t_before[index].double() * 0.3 + t * 0.7
            exp_s = exp_s / exp_s.norm(dim=1, keepdim=True)
            exp_t = exp_t / exp_t.norm(dim=1, keepdim=True)
        assert_rel_close(crd.memory_s[index], exp_s)
        assert_rel_close(crd.memory_t[index], exp_t)
        assert torch.allclose(crd.memory_s[index].norm(dim=1), torch.ones(bsz))
        if call == 0:
            z_first = (crd.z_s.item(), crd.z_t.item())
    assert (crd.z_s.item(), crd.z_t.item()) == z_first


# --- tiny hand-computed case -----------------------------------------------------------
@pytest.mark.parametrize("dense_ratio", [0, 10**9], ids=["gather_bmm", "dense"])
def test_tiny_hand_computed_case(monkeypatch, dense_ratio):
    """n_data=4 (labels 0,0,1,1), feat_dim=2, K=2, T=1, m=0.5, identity embed heads.

    Anchor index 0, contrast row (0, 2, 3); s = (0, 1), t = (1, 0).
    student bank M_s: r0=(1,0) r1=(.6,.8) r2=(0,1) r3=(-1,0)
    teacher bank M_t: r0=(.6,.8) r1=(.8,.6) r2=(0,-1) r3=(1,0)
    teacher anchor <M_s[c], t> = (1, 0, -1)   -> exp: (e, 1, 1/e)
    student anchor <M_t[c], s> = (.8, -1, 0)  -> exp: (e^.8, 1/e, 1)
    Z_t = 4 (e + 1 + 1/e) / 3 = 5.448215026173983
    Z_s = 4 (e^.8 + 1/e + 1) / 3 = 4.79122715955188
    h_t = (0.4989307168311164, 0.18354635329109825, 0.06752292987778535)
    h_s = (0.4645033212536349, 0.0767818825784603, 0.20871479616790475)
    K Pn = 2/4 = 0.5; L(h) = -[log(h0/(h0+.5+eps)) + sum_k log(.5/(hk+.5+eps))]
    L(h_t) = 1.1335780324174456, L(h_s) = 1.2223461474966082, crd = 2.355924179914054
    update: M_s[0] = normalize(.5 (1,0) + .5 (0,1)) = (1/sqrt2, 1/sqrt2)
            M_t[0] = normalize(.5 (.6,.8) + .5 (1,0)) = (2/sqrt5, 1/sqrt5)
    second call, same inputs, Z kept:
      teacher anchor positive exp(1/sqrt2)/Z_t = 0.37225310893643615
      student anchor positive exp(1/sqrt5)/Z_s = 0.32641915397758914
      crd = 2.7114868750103795
      M_s[0] = (0.3826834323650897, 0.9238795325112867)   (= (sin 22.5deg, cos 22.5deg))
      M_t[0] = (0.9732489894677302, 0.22975292054736118)
    """
    monkeypatch.setattr(methods.crd, "_DENSE_RATIO", dense_ratio)
    crd = build([0, 0, 1, 1], 2, 2, feat_dim=2, nce_k=2, nce_t=1.0, nce_m=0.5)
    with torch.no_grad():
        for lin in (crd.embed_s.linear, crd.embed_t.linear):
            lin.weight.copy_(torch.eye(2))
            lin.bias.zero_()
        crd.memory_s.copy_(torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [-1.0, 0.0]]))
        crd.memory_t.copy_(torch.tensor([[0.6, 0.8], [0.8, 0.6], [0.0, -1.0], [1.0, 0.0]]))
    index = torch.tensor([0])
    batch = Batch(x=torch.zeros(1, 3), y=torch.tensor([0]), index=index,
                  extras={"contrast_index": torch.tensor([[0, 2, 3]])})
    s_out = ModelOutput(logits=torch.zeros(1, 2), features=[], embedding=torch.tensor([[0.0, 1.0]]))
    t_out = ModelOutput(logits=torch.zeros(1, 2), features=[], embedding=torch.tensor([[1.0, 0.0]]))

    # scores alone (contrast() updates the banks, so run it on a copy)
    probe = copy.deepcopy(crd)
    h_s, h_t = probe.contrast(torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.0]]), index,
                              batch.extras["contrast_index"])
    assert_rel_close(h_t, torch.tensor([[0.4989307168311164, 0.18354635329109825, 0.06752292987778535]]))
    assert_rel_close(h_s, torch.tensor([[0.4645033212536349, 0.0767818825784603, 0.20871479616790475]]))

    loss1 = crd.losses(s_out, t_out, batch)["crd"]
    assert loss1.item() == pytest.approx(2.355924179914054, rel=1e-5)
    assert crd.z_t.item() == pytest.approx(5.448215026173983, rel=1e-6)
    assert crd.z_s.item() == pytest.approx(4.79122715955188, rel=1e-6)
    r2, r5 = 1 / math.sqrt(2), 1 / math.sqrt(5)
    assert_rel_close(crd.memory_s, torch.tensor([[r2, r2], [0.6, 0.8], [0.0, 1.0], [-1.0, 0.0]]))
    assert_rel_close(crd.memory_t, torch.tensor([[2 * r5, r5], [0.8, 0.6], [0.0, -1.0], [1.0, 0.0]]))

    probe = copy.deepcopy(crd)
    h_s, h_t = probe.contrast(torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.0]]), index,
                              batch.extras["contrast_index"])
    assert h_t[0, 0].item() == pytest.approx(0.37225310893643615, rel=1e-5)
    assert h_s[0, 0].item() == pytest.approx(0.32641915397758914, rel=1e-5)

    loss2 = crd.losses(s_out, t_out, batch)["crd"]
    assert loss2.item() == pytest.approx(2.7114868750103795, rel=1e-5)
    assert crd.z_t.item() == pytest.approx(5.448215026173983, rel=1e-6)
    assert crd.z_s.item() == pytest.approx(4.79122715955188, rel=1e-6)
    assert_rel_close(crd.memory_s[0], torch.tensor([0.3826834323650897, 0.9238795325112867]))
    assert_rel_close(crd.memory_t[0], torch.tensor([0.9732489894677302, 0.22975292054736118]))
    assert_rel_close(crd.memory_s[1:], torch.tensor([[0.6, 0.8], [0.0, 1.0], [-1.0, 0.0]]))


# --- negatives -------------------------------------------------------------------------
def _draw(crd, index, seed):
    g = torch.Generator().manual_seed(seed)
    batch = Batch(x=torch.zeros(len(index), 3), y=torch.zeros(len(index), dtype=torch.long), index=index)
    return crd.prepare(batch, g)["contrast_index"]


@pytest.mark.parametrize(
    "labels, k",
    [
        (torch.arange(60) % 3, 25),             # pool 40 <= 8K: permutation path, no repeats
        (torch.arange(400) % 2, 10),            # pool 200 > 8K: rejection path, no repeats
        (torch.tensor([0] * 5 + [1] * 3 + [2] * 7), 9),   # K > pool for some classes: replacement
    ],
)
def test_negatives_other_class_shape_first_column_and_seed(labels, k):
    crd = build(labels, 4, 6, feat_dim=4, nce_k=k)
    index = torch.arange(0, labels.numel(), 2)[:16].flip(0)
    cidx = _draw(crd, index, seed=7)
    assert cidx.dtype == torch.long and cidx.device == index.device
    assert cidx.shape == (index.numel(), k + 1)
    assert torch.equal(cidx[:, 0], index)
    neg = cidx[:, 1:]
    assert bool(((neg >= 0) & (neg < labels.numel())).all())
    assert bool((labels[neg] != labels[index].unsqueeze(1)).all())
    for row, i in zip(neg, index):
        pool = int((labels != labels[i]).sum())
        if k <= pool:  # RepDistiller: replace = k > len(cls_negative[target])
            assert row.unique().numel() == k
    assert torch.equal(cidx, _draw(crd, index, seed=7))
    assert not torch.equal(cidx, _draw(crd, index, seed=8))


def test_negatives_use_only_the_given_generator():
    crd = build(torch.arange(50) % 5, 4, 4, feat_dim=4, nce_k=8)
    index = torch.tensor([4, 9, 13])
    torch.manual_seed(1)
    a = _draw(crd, index, seed=3)
    torch.manual_seed(2)
    b = _draw(crd, index, seed=3)
    assert torch.equal(a, b)


@pytest.mark.parametrize("n, k", [(30, 10), (400, 10)])  # permutation and rejection paths
def test_negatives_are_uniform_over_other_classes(n, k):
    labels = torch.arange(n) % 2
    sampler = NegativeSampler(labels, k)
    g = torch.Generator().manual_seed(0)
    index = torch.zeros(2000, dtype=torch.long)  # anchor of class 0: pool = the odd indices
    neg = sampler.draw(index, g)[:, 1:]
    assert bool((neg % 2 == 1).all())
    counts = torch.bincount(neg.flatten(), minlength=n)[1::2].double()
    expected = 2000 * k / (n // 2)
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    dof = n // 2 - 1
    assert chi2 < dof + 6 * math.sqrt(2 * dof)  # without replacement the spread is even smaller
    # every position is uniform too (ordered tuples of distinct values are equally likely)
    first = torch.bincount(neg[:, 0], minlength=n)[1::2].double()
    chi2 = float(((first - 2000 / (n // 2)) ** 2 / (2000 / (n // 2))).sum())
    assert chi2 < dof + 6 * math.sqrt(2 * dof)


# --- construction ---------------------------------------------------------------------
def test_defaults_buffers_and_parameters():
    crd = build(torch.arange(40) % 4, 16, 32)
    assert crd.hparams == {"gamma": 1.0, "beta": 0.8, "feat_dim": 128, "nce_k": 16384,
                           "nce_t": 0.07, "nce_m": 0.5}
    assert crd.needs_features and crd.needs_teacher
    assert crd.loss_weights() == {"crd": 0.8} and crd.ce_weight() == 1.0
    sd = crd.state_dict()
    for name in ("memory_s", "memory_t", "z_s", "z_t"):
        assert name in sd
    assert crd.memory_s.shape == crd.memory_t.shape == (40, 128)
    stdv = 1 / math.sqrt(128 / 3)
    assert float(crd.memory_s.abs().max()) <= stdv and float(crd.memory_t.abs().max()) <= stdv
    assert crd.z_s.item() == -1.0 and crd.z_t.item() == -1.0
    assert crd.extra_parameters() == (16 * 128 + 128) + (32 * 128 + 128)
    names = {n for n, _ in crd.named_parameters()}
    assert names == {"embed_s.linear.weight", "embed_s.linear.bias",
                     "embed_t.linear.weight", "embed_t.linear.bias"}


def test_state_dict_round_trip_keeps_memory_and_z():
    labels = torch.arange(12) % 3
    a = build(labels, 4, 4, feat_dim=4, nce_k=3)
    index = torch.tensor([0, 5])
    batch = Batch(x=torch.zeros(2, 3), y=labels[index], index=index)
    batch.extras = a.prepare(batch, torch.Generator().manual_seed(0))
    emb = ModelOutput(logits=torch.zeros(2, 3), features=[], embedding=torch.randn(2, 4))
    a.losses(emb, emb, batch)
    b = build(labels, 4, 4, feat_dim=4, nce_k=3)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.memory_s, b.memory_s) and torch.equal(a.memory_t, b.memory_t)
    assert a.z_s.item() > 0 and b.z_s.item() == a.z_s.item() and b.z_t.item() == a.z_t.item()


def test_unknown_hyperparameter_raises():
    ctx = make_ctx(torch.arange(10) % 2, 4, 4)
    with pytest.raises(HyperparameterError):
        build_method("crd", ctx, {"crd": {"nce_kk": 5}})
    with pytest.raises(HyperparameterError):
        build_method("crd", ctx, {"crd": {"nce_k": 0}})
