"""Loss terms in float32 whatever the forwards' autocast (``kdcore.train.losses_in_float32``).

The fast paths run the teacher's and the student's forwards under bf16 autocast on CUDA (``--amp auto``);
every reference computes its loss in float32. CPU autocast demotes the same ops to bf16 (matmul, conv),
so these tests show on the CPU what a GPU run would compute.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from kdcore.train import StudentRun, compute_terms, draw_views, teacher_outputs

from kdcore.recipe import FastPaths
from cohorts import CPU, digits_slice, make_run, random_teacher
from methods import Batch, BuildContext, ModelOutput, build_method, list_methods, modified_methods

BF16 = FastPaths(amp="bf16").resolve(CPU)


def floating_tensors(obj):
    """Every floating tensor in a ModelOutput / ViewOutput / Batch / dict / list, nested."""
    if isinstance(obj, torch.Tensor):
        return [obj] if obj.is_floating_point() else []
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in floating_tensors(v)]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in floating_tensors(v)]
    if hasattr(obj, "__dataclass_fields__"):
        return [t for name in obj.__dataclass_fields__ for t in floating_tensors(getattr(obj, name))]
    return []


def spy(run: StudentRun, calls: list) -> None:
    """Record, for each forward and each loss call of ``run``, the autocast state and the dtypes it saw."""
    model, method = run.model, run.method
    forward, losses, stage_losses = model.forward_kd, method.losses, method.stage_losses

    def forward_kd(x, preact=False):
        out = forward(x, preact=preact)
        calls.append(("forward", torch.is_autocast_enabled("cpu"), {out.logits.dtype}))
        return out

    def record(fn):
        def call(*args):
            calls.append(("losses", torch.is_autocast_enabled("cpu"),
                          {t.dtype for t in floating_tensors(list(args))}))
            return fn(*args)
        return call

    model.forward_kd, method.losses, method.stage_losses = forward_kd, record(losses), record(stage_losses)


@pytest.mark.parametrize("name", list_methods() + modified_methods())
def test_every_method_gets_float32_outputs_without_autocast_under_bf16_forwards(name):
    """A step of each stage under amp=bf16: the forwards ran in bf16, every loss call (the main one, a
    pre-training stage's, MLKD's views and triplet's extra samples through the batch) saw float32 only."""
    data, teacher = digits_slice(64), random_teacher()
    run = make_run(name, data, teacher, overrides={"crd": {"nce_k": 16}})
    run.fast = BF16
    calls: list = []
    spy(run, calls)
    x, y, index = next(iter(data.epoch_batches(32, torch.Generator().manual_seed(0), CPU)))
    for epoch in sorted({0, run.stage_epochs}):
        run.begin_epoch(epoch)
        teacher_out = teacher_outputs(teacher, x, CPU, BF16, run.method.needs_preact)
        views = draw_views([run], index, data, CPU, epoch, 0, teacher, BF16, run.method.needs_preact,
                           not run.method.needs_features)
        loss = run.step(x, y, index, teacher_out, data, CPU, epoch, 0, views.get(run.seed))
        assert torch.isfinite(loss), name
    forwards = [c for c in calls if c[0] == "forward"]
    loss_calls = [c for c in calls if c[0] == "losses"]
    assert forwards and all(on and dtypes == {torch.bfloat16} for _, on, dtypes in forwards), forwards
    assert loss_calls and all(not on and dtypes <= {torch.float32} for _, on, dtypes in loss_calls), loss_calls


class CloseEmbeddings(nn.Module):
    """A stand-in student whose forward returns bf16 embeddings close together (a common offset of 3, spread
    0.05), as a bf16 forward would: the case where bf16 arithmetic in rkd's distances cancels."""

    def __init__(self, b: int, d: int, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.embedding = nn.Parameter(3.0 + 0.05 * torch.randn(b, d, generator=g))

    def forward_kd(self, x, preact=False):
        emb = self.embedding.bfloat16()
        return ModelOutput(torch.zeros(emb.shape[0], 10, dtype=torch.bfloat16) + emb[:, :1], [], emb)


def rkd_distance_reference(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """RepDistiller ``distiller_zoo/RKD.py`` distance term, transcribed independently in float64: pairwise
    Euclidean distances, each normalised by the mean over the distinct pairs, smooth-L1 (beta 1), mean."""
    def normalised(e):
        d = torch.cdist(e, e)
        n = e.shape[0]
        return d / (d.sum() / (n * (n - 1)))

    diff = (normalised(s) - normalised(t)).abs()
    return torch.where(diff < 1, 0.5 * diff**2, diff - 0.5).mean()


def test_rkd_under_bf16_forwards_is_the_float32_formula_on_the_bf16_outputs():
    b = 16
    student, teacher = CloseEmbeddings(b, 64, 1), CloseEmbeddings(b, 128, 2)
    s_out, t_out = student.forward_kd(None), teacher.forward_kd(None)
    ctx = BuildContext(student=s_out, teacher=t_out, num_classes=10, train_labels=torch.zeros(b, dtype=torch.long))
    method = build_method("rkd", ctx)
    batch = Batch(torch.zeros(b, 3, 32, 32), torch.zeros(b, dtype=torch.long), torch.arange(b))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, terms = compute_terms(student, method, batch.x, batch.y, t_out, batch)
    expected = rkd_distance_reference(s_out.embedding.double(), t_out.embedding.double())
    assert terms["rkd_distance"].dtype == torch.float32
    assert abs(terms["rkd_distance"].double() - expected) <= 1e-4 * expected
    # why: the same formula left under bf16 autocast (as it was computed before) is far off here
    with torch.autocast("cpu", dtype=torch.bfloat16):
        in_bf16 = method.losses(s_out, t_out, batch)["rkd_distance"]
    assert abs(in_bf16.double() - expected) > 0.5 * expected
    terms["rkd_distance"].backward()  # the gradient reaches the student through the upcast
    assert student.embedding.grad is not None and torch.isfinite(student.embedding.grad).all()
