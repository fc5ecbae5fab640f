"""triplet / pair: golden values against torch's TripletMarginLoss (the authors'
criterion), hand-computed tiny cases, the KL option, and negative sampling."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import methods.pair  # noqa: F401  (registers "pair")
import methods.triplet  # noqa: F401  (registers "triplet")
from kdcore.models.registry import ModelOutput
from methods.base import Batch, BuildContext, HyperparameterError, build_method
from methods.triplet import OtherClassSampler, draw_in_batch


def out(logits: torch.Tensor) -> ModelOutput:
    b = logits.shape[0]
    return ModelOutput(logits=logits, features=[torch.zeros(b, 1, 1, 1)], embedding=torch.zeros(b, 1))


def ctx_for(train_labels: torch.Tensor, num_classes: int = 10, dim: int = 10) -> BuildContext:
    probe = out(torch.zeros(2, dim))
    return BuildContext(student=probe, teacher=probe, num_classes=num_classes, train_labels=train_labels)


def build(name: str, train_labels=None, **hp):
    if train_labels is None:
        train_labels = torch.arange(40) % 10
    return build_method(name, ctx_for(train_labels), {name: hp} if hp else None)


def dataset_batch(y: torch.Tensor, neg_logits: torch.Tensor) -> Batch:
    b = y.numel()
    return Batch(x=torch.zeros(b, 1), y=y, index=torch.arange(b), extras={"extra_student": out(neg_logits)})


def rel_close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-5) -> bool:
    return bool(torch.allclose(a, b, rtol=rtol, atol=rtol * float(b.abs().max().clamp_min(1e-12))))


# --- triplet: golden values ----------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_triplet_matches_torch_triplet_margin_loss(seed):
    g = torch.Generator().manual_seed(seed)
    B, C = 16, 10
    t = torch.randn(B, C, generator=g) * 3
    s0 = t + torch.randn(B, C, generator=g) * 2  # some inside the margin, some beyond
    n0 = torch.randn(B, C, generator=g) * 3
    y = torch.randint(0, C, (B,), generator=g)

    s = s0.clone().requires_grad_(True)
    n = n0.clone().requires_grad_(True)
    m = build("triplet")
    terms = m.losses(out(s), out(t), dataset_batch(y, n))
    assert set(terms) == {"triplet"}
    terms["triplet"].backward()

    s_ref = s0.clone().requires_grad_(True)
    n_ref = n0.clone().requires_grad_(True)
    ref = torch.nn.TripletMarginLoss(margin=5.0)(t, s_ref, n_ref)
    ref.backward()

    per = F.triplet_margin_loss(t, s0, n0, margin=5.0, reduction="none")
    assert (per > 0).any() and (per == 0).any(), "case should cover both sides of the margin"
    assert rel_close(terms["triplet"].detach(), ref.detach())
    assert rel_close(s.grad, s_ref.grad)
    assert rel_close(n.grad, n_ref.grad)


def test_triplet_hand_computed_2d():
    # sample A: t=(0,0) s=(3,4) s-=(0,12): d+=5, d-=12, 5-12+5=-2 -> 0 (beyond the margin)
    # sample B: t=(1,1) s=(1,2) s-=(4,5):  d+=1, d-=5,  1-5+5=1   -> 1 (inside the margin)
    # mean = 0.5 ; eps=1e-6 inside the distance moves it by ~2e-7
    t = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    s = torch.tensor([[3.0, 4.0], [1.0, 2.0]], requires_grad=True)
    n = torch.tensor([[0.0, 12.0], [4.0, 5.0]], requires_grad=True)
    m = build("triplet")
    loss = m.losses(out(s), out(t), dataset_batch(torch.tensor([0, 1]), n))["triplet"]
    assert loss.item() == pytest.approx(0.5, rel=1e-5)
    loss.backward()
    # d/ds_B of d+/2 = (s_B - t_B)/(2 d+) = (0, 0.5); d/dn_B of -d-/2 = -(n_B - t_B)/(2 d-) = (-0.3, -0.4)
    assert torch.allclose(s.grad, torch.tensor([[0.0, 0.0], [0.0, 0.5]]), atol=1e-5)
    assert torch.allclose(n.grad, torch.tensor([[0.0, 0.0], [-0.3, -0.4]]), atol=1e-5)
    assert m.loss_weights() == {"triplet": 2.0}
    assert m.ce_weight() == 1.0
    assert m.needs_features is False


def test_triplet_teacher_gets_no_gradient():
    t = torch.randn(4, 10, requires_grad=True)
    s = torch.randn(4, 10, requires_grad=True)
    n = torch.randn(4, 10)
    m = build("triplet")
    m.losses(out(s), out(t), dataset_batch(torch.arange(4), n))["triplet"].backward()
    assert t.grad is None and s.grad is not None


# --- triplet: KL option ----------------------------------------------------------
def test_triplet_kl_option_matches_authors_kldivloss():
    g = torch.Generator().manual_seed(3)
    t = torch.randn(8, 10, generator=g) * 2
    s = torch.randn(8, 10, generator=g) * 2
    n = torch.randn(8, 10, generator=g)
    m = build("triplet", kl=1.0)
    terms = m.losses(out(s), out(t), dataset_batch(torch.arange(8) % 10, n))
    # utils/kldivloss.py: kl_div(log_softmax(inputs), softmax(targets), batchmean), inputs = student
    authors = F.kl_div(F.log_softmax(s, dim=1), F.softmax(t, dim=1), reduction="batchmean")
    assert set(terms) == {"triplet", "triplet_kl"}
    assert terms["triplet_kl"].item() == pytest.approx(authors.item(), rel=1e-5)
    assert m.loss_weights() == {"triplet": 2.0, "triplet_kl": 1.0}
    # default: no KL term
    d = build("triplet")
    assert "triplet_kl" not in d.losses(out(s), out(t), dataset_batch(torch.arange(8) % 10, n))
    assert "triplet_kl" not in d.loss_weights()


# --- negatives --------------------------------------------------------------------
def test_dataset_negatives_are_other_class_and_reproducible():
    g0 = torch.Generator().manual_seed(0)
    train_labels = torch.randint(0, 5, (300,), generator=g0)
    m = build("triplet", train_labels=train_labels)
    index = torch.randperm(300, generator=g0)[:64]
    batch = Batch(x=torch.zeros(64, 1), y=train_labels[index], index=index)
    for seed in range(20):
        idx = m.prepare(batch, torch.Generator().manual_seed(seed))["extra_index"]
        assert idx.dtype == torch.long and idx.shape == (64,)
        assert ((idx >= 0) & (idx < 300)).all()
        assert (train_labels[idx] != batch.y).all()
    a = m.prepare(batch, torch.Generator().manual_seed(7))["extra_index"]
    b = m.prepare(batch, torch.Generator().manual_seed(7))["extra_index"]
    c = m.prepare(batch, torch.Generator().manual_seed(8))["extra_index"]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_dataset_negatives_uniform_over_other_class():
    train_labels = torch.tensor([0] * 10 + [1] * 5 + [2] * 15)  # 30 samples, unequal classes
    train_labels = train_labels[torch.randperm(30, generator=torch.Generator().manual_seed(1))]
    sampler = OtherClassSampler(train_labels)
    draws = sampler.draw(torch.full((20000,), 1), torch.Generator().manual_seed(0))
    counts = torch.bincount(draws, minlength=30)
    own = train_labels == 1
    assert counts[own].sum() == 0
    # 25 candidates, 800 expected each
    assert counts[~own].min() > 650 and counts[~own].max() < 950


def test_batch_negatives_in_batch_other_class():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (32,), generator=g)
    for seed in range(20):
        pos, valid = draw_in_batch(y, torch.Generator().manual_seed(seed))
        assert valid.all()
        assert ((pos >= 0) & (pos < 32)).all()
        assert (y[pos] != y).all()
    # uniform over the other-class members: anchor 0 of class 0 among [0, 1, 1, 2]
    y2 = torch.tensor([0, 1, 1, 2])
    gen = torch.Generator().manual_seed(1)
    picks = torch.stack([draw_in_batch(y2, gen)[0][0] for _ in range(3000)])
    counts = torch.bincount(picks, minlength=4)
    assert counts[0] == 0 and all(800 < int(c) < 1200 for c in counts[1:])


def test_batch_mode_value_and_dropped_anchors():
    g = torch.Generator().manual_seed(4)
    y = torch.tensor([0, 0, 1, 2, 1, 0])
    t = torch.randn(6, 10, generator=g) * 3
    s = (t + torch.randn(6, 10, generator=g) * 2).requires_grad_(True)
    m = build("triplet", negatives="batch")
    batch = Batch(x=torch.zeros(6, 1), y=y, index=torch.arange(6))
    extras = m.prepare(batch, torch.Generator().manual_seed(0))
    assert "extra_index" not in extras  # no extra forward
    batch.extras.update(extras)
    pos = extras["triplet_negative"]
    loss = m.losses(out(s), out(t), batch)["triplet"]
    ref = torch.nn.TripletMarginLoss(margin=5.0)(t, s, s[pos])
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)

    # whole batch one class: every anchor has no negative -> dropped, term 0, graph intact
    y1 = torch.zeros(4, dtype=torch.long)
    s1 = torch.randn(4, 10, requires_grad=True)
    b1 = Batch(x=torch.zeros(4, 1), y=y1, index=torch.arange(4))
    e1 = m.prepare(b1, torch.Generator().manual_seed(0))
    assert not e1["triplet_negative_valid"].any()
    b1.extras.update(e1)
    l1 = m.losses(out(s1), out(torch.randn(4, 10)), b1)["triplet"]
    assert l1.item() == 0.0
    l1.backward()
    assert torch.all(s1.grad == 0)


# --- pair -----------------------------------------------------------------------
def test_pair_hand_computed_2d():
    # sample A: t=(0,0) s=(3,4) s-=(0,12): d+=5, d-=12 -> (25 + 0)/2 = 12.5
    # sample B: t=(1,1) s=(1,2) s-=(2,2):  d+=1, d-=sqrt2 -> (1 + (5-sqrt2)^2)/2 = 6.92893219
    # mean = 9.71446609
    t = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    s = torch.tensor([[3.0, 4.0], [1.0, 2.0]])
    n = torch.tensor([[0.0, 12.0], [2.0, 2.0]])
    m = build("pair")
    loss = m.losses(out(s), out(t), dataset_batch(torch.tensor([0, 1]), n))["pair"]
    assert loss.item() == pytest.approx(9.71446609, rel=1e-5)
    assert (12.5 + (1 + (5 - math.sqrt(2)) ** 2) / 2) / 2 == pytest.approx(9.71446609, rel=1e-8)
    assert m.loss_weights() == {"pair": 2.0}
    assert m.ce_weight() == 1.0


def test_pair_gradient_matches_direct_transcription():
    g = torch.Generator().manual_seed(5)
    B, C = 12, 10
    t = torch.randn(B, C, generator=g) * 2
    s0 = t + torch.randn(B, C, generator=g)
    n0 = t + torch.randn(B, C, generator=g) * 1.5  # some negatives inside the margin, some beyond
    n0[:4] += 10.0
    s = s0.clone().requires_grad_(True)
    n = n0.clone().requires_grad_(True)
    m = build("pair")
    loss = m.losses(out(s), out(t), dataset_batch(torch.arange(B) % C, n))["pair"]
    loss.backward()

    s_ref = s0.clone().requires_grad_(True)
    n_ref = n0.clone().requires_grad_(True)
    eps = 1e-6
    d_pos = torch.sqrt(((t - s_ref + eps) ** 2).sum(1))
    d_neg = torch.sqrt(((t - n_ref + eps) ** 2).sum(1))
    hinge = torch.where(d_neg < 5.0, 5.0 - d_neg, torch.zeros_like(d_neg))
    assert (d_neg < 5.0).any() and (d_neg > 5.0).any()
    ref = ((d_pos**2 + hinge**2) / 2).mean()
    ref.backward()
    assert rel_close(loss.detach(), ref.detach())
    assert rel_close(s.grad, s_ref.grad)
    assert rel_close(n.grad, n_ref.grad)


def test_pair_batch_mode_shares_sampler():
    y = torch.tensor([0, 1, 2, 0])
    m = build("pair", negatives="batch")
    batch = Batch(x=torch.zeros(4, 1), y=y, index=torch.arange(4))
    e = m.prepare(batch, torch.Generator().manual_seed(3))
    pos, _ = draw_in_batch(y, torch.Generator().manual_seed(3))
    assert torch.equal(e["pair_negative"], pos)


# --- hyperparameters ----------------------------------------------------------------
@pytest.mark.parametrize("name", ["triplet", "pair"])
@pytest.mark.parametrize("bad", [{"temperature": 4.0}, {"negatives": "random"}, {"negatives": 3}, {"margin": "x"}])
def test_bad_hyperparameters(name, bad):
    with pytest.raises(HyperparameterError):
        build(name, **bad)


def test_defaults():
    t = build("triplet")
    assert t.hparams == {"gamma": 1.0, "weight": 2.0, "margin": 5.0, "kl": 0.0, "kl_T": 1.0, "negatives": "dataset"}
    p = build("pair")
    assert p.hparams == {"gamma": 1.0, "weight": 2.0, "margin": 5.0, "negatives": "dataset"}
