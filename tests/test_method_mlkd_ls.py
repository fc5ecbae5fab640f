"""MLKD (two views), logit standardisation (the ``+ls`` modifier) and the strong view they train on.

Golden values come from independent transcriptions of the official code, written below with loops,
numpy and explicit sums:
  * sunshangquan/logit-standardization-KD ``mdistiller/distillers/KD.py`` (``normalize``, ``kd_loss``)
  * Jin-Ying/Multi-Level-Logit-Distillation ``mdistiller/distillers/KD_ours.py`` (``forward_train``)
  * their ``mdistiller/dataset/cifar100.py`` RandAugment (PIL), against ``kdcore/data/augment.py``
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from kdcore.data.augment import RANDAUGMENT_OPS, cutout
from benchmarks.distributed import main as distributed_main
from benchmarks.run import main
from kdcore.train import draw_views, seed_for
from kdcore.recipe import FastPaths
from methods import (Batch, BuildContext, ModelOutput, UnknownMethodError, ViewOutput, build_method, list_methods,
                     list_modifiers, method_views, validate_method)
from methods.ls import standardise
from cohorts import digits_slice, make_run, random_teacher, train
from test_harness import assert_bitwise_equal

CPU = torch.device("cpu")
RTOL = 1e-5


# --- independent transcriptions -------------------------------------------------------------------
def ref_normalize(z):  # logit-standardization-KD normalize(): (z - mean) / (1e-7 + std), std unbiased
    out = torch.empty_like(z)
    for b in range(z.shape[0]):
        row = z[b]
        mean = sum(row) / len(row)
        var = sum((v - mean) ** 2 for v in row) / (len(row) - 1)
        out[b] = (row - mean) / (1e-7 + var.sqrt())
    return out


def ref_kd(s, t, tau, stand=False):  # their kd_loss: kl_div(log_softmax(s/T), softmax(t/T)).sum(1).mean() * T^2
    if stand:
        s, t = ref_normalize(s), ref_normalize(t)
    total = 0.0
    for b in range(s.shape[0]):
        ls = s[b] / tau - torch.logsumexp(s[b] / tau, 0)
        pt = torch.exp(t[b] / tau) / torch.exp(t[b] / tau).sum()
        total = total + sum(pt[j] * (torch.log(pt[j]) - ls[j]) for j in range(s.shape[1]))
    return total / s.shape[0] * tau * tau


def ref_gram_loss(s, t, tau, classwise):  # cc_loss (P^T P, / C) and bc_loss (P P^T, / B), reduce=True
    ps, pt = torch.softmax(s / tau, 1), torch.softmax(t / tau, 1)
    if classwise:
        gs, gt = torch.einsum("bi,bj->ij", ps, ps), torch.einsum("bi,bj->ij", pt, pt)
        return ((gt - gs) ** 2).sum() / s.shape[1]
    gs, gt = torch.einsum("ib,jb->ij", ps, ps), torch.einsum("ib,jb->ij", pt, pt)
    return ((gt - gs) ** 2).sum() / s.shape[0]


def ref_mlkd(s_w, s_s, t_w, t_s, y, T=4.0, ce_w=0.1, kd_w=0.9, stand=False):
    """KD_ours.forward_train, line by line (the mask products as the code writes them)."""
    pred = torch.softmax(t_w, 1)
    conf = pred.max(1).values
    mask = torch.from_numpy(conf.numpy() <= np.percentile(conf.numpy().flatten(), 50)).float()
    cconf = pred.sum(0)
    cmask = torch.from_numpy(cconf.numpy() <= np.percentile(cconf.numpy().flatten(), 50)).float()
    ce = ce_w * (torch.nn.functional.cross_entropy(s_w, y) + torch.nn.functional.cross_entropy(s_s, y))
    taus = [T, 3.0, 5.0, 2.0, 6.0]
    kd_weak = sum(kd_w * (ref_kd(s_w, t_w, tau, stand) * mask).mean() for tau in taus)
    kd_strong = (kd_w * ref_kd(s_s, t_s, T, stand) + kd_w * ref_kd(s_s, t_s, 3.0, stand)
                 + kd_w * ref_kd(s_s, t_s, 5.0, stand) + kd_w * ref_kd(s_w, t_w, 2.0, stand)
                 + kd_w * ref_kd(s_w, t_w, 6.0, stand))
    cc = sum(kd_w * (ref_gram_loss(s_w, t_w, tau, True) * cmask).mean() for tau in taus)
    bc = sum(kd_w * (ref_gram_loss(s_w, t_w, tau, False) * mask).mean() for tau in taus)
    return ce + kd_weak + kd_strong + cc + bc


# --- helpers ---------------------------------------------------------------------------------------
def _out(logits):
    return ModelOutput(logits=logits, features=[], embedding=None)


def _ctx(num_classes=7):
    return BuildContext(None, None, num_classes, torch.zeros(10, dtype=torch.long))


def _weighted_total(method, terms, ce):
    weights = {"ce": method.ce_weight(), **method.loss_weights()}
    return weights["ce"] * ce + sum(weights[k] * v for k, v in terms.items())


def _logits(seed, b=6, c=7, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, c, generator=g) * scale for _ in range(4)], torch.randint(0, c, (b,), generator=g)


# --- logit standardisation ---------------------------------------------------------------------------
def test_standardise_hand_computed():
    # row (1, 2, 3, 6): mean 3, unbiased var (4 + 1 + 0 + 9) / 3 = 14/3, std 2.1602469
    z = standardise(torch.tensor([[1.0, 2.0, 3.0, 6.0]]))
    std = math.sqrt(14 / 3)
    assert torch.allclose(z, torch.tensor([[-2 / std, -1 / std, 0.0, 3 / std]]), rtol=1e-6)


def test_kd_plus_ls_resolves_and_matches_their_kd_loss():
    hp = validate_method("kd+ls")
    assert hp == {"kd": {"T": 2.0, "gamma": 0.1, "alpha": 9.0}, "ls": {"base_temp": 2.0, "kd_weight": 9.0}}
    assert validate_method("kd+ls", {"ls": {"base_temp": 3.0}})["kd"]["T"] == 3.0
    (s, t, _, _), y = _logits(1)
    method = build_method("kd+ls", _ctx())
    s1 = s.clone().requires_grad_(True)
    ours = method.losses(_out(s1), _out(t), Batch(s, y, y))["kd"]
    s2 = s.clone().requires_grad_(True)
    ref = ref_kd(s2, t, 2.0, stand=True)
    assert torch.allclose(ours, ref, rtol=RTOL)
    (g1,) = torch.autograd.grad(ours, s1)
    (g2,) = torch.autograd.grad(ref, s2)
    assert torch.allclose(g1, g2, rtol=RTOL, atol=1e-7)
    # kd alone is untouched (bitwise): the transform is only set by the modifier
    plain = build_method("kd", _ctx()).losses(_out(s), _out(t), Batch(s, y, y))["kd"]
    assert torch.equal(plain, ref_kd(s, t, 4.0) * 0 + plain) and not torch.allclose(plain, ours)


def test_ls_is_a_modifier_with_clear_errors():
    assert "ls" in list_modifiers() and "ls" not in list_methods()
    for name, message in [("ls", "'ls' modifies another method: write it after one, e.g."),
                          ("ls+kd", "'ls' modifies another method"),
                          ("fitnet+ls", "'ls' applies to ")]:
        with pytest.raises(UnknownMethodError, match=message):
            validate_method(name)
    # dkd multiplies its weights (their tools/train.py: cfg.DKD.ALPHA *= kd_weight)
    if "dkd" in list_methods():
        base, ls = validate_method("dkd")["dkd"], validate_method("dkd+ls")["dkd"]
        assert ls["alpha"] == base["alpha"] * 9 and ls["beta"] == base["beta"] * 9 and ls["T"] == 2.0


def test_cli_refuses_ls_alone_before_any_work(capsys, tmp_path):
    code = main(["--results", str(tmp_path / "r"), "--methods", "ls", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: 'ls' modifies another method")
    assert not (tmp_path / "r").exists()


# --- MLKD ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,stand", [("mlkd", False), ("mlkd+ls", True)])
@pytest.mark.parametrize("seed", [0, 1])
def test_mlkd_value_and_gradient_match_the_official_forward(name, stand, seed):
    (s_w, s_s, t_w, t_s), y = _logits(seed, b=8, c=5)
    method = build_method(name, _ctx(5))
    hp = validate_method(name)["mlkd"]
    a = [v.clone().requires_grad_(True) for v in (s_w, s_s)]
    batch = Batch(s_w, y, y, views={"strong": ViewOutput(_out(a[1]), _out(t_s))})
    ours = _weighted_total(method, method.losses(_out(a[0]), _out(t_w), batch),
                           torch.nn.functional.cross_entropy(a[0], y))
    b = [v.clone().requires_grad_(True) for v in (s_w, s_s)]
    ref = ref_mlkd(b[0], b[1], t_w, t_s, y, T=hp["T"], ce_w=hp["gamma"], kd_w=hp["alpha"], stand=stand)
    assert torch.allclose(ours, ref, rtol=RTOL), (float(ours), float(ref))
    for ga, gb in zip(torch.autograd.grad(ours, a), torch.autograd.grad(ref, b)):
        assert torch.allclose(ga, gb, rtol=RTOL, atol=1e-6)


def test_mlkd_hand_computed_gram_terms_and_mask_fraction():
    # two samples, two classes: student uniform, teacher one-hot-ish; tau = 1 by hand
    s = torch.zeros(2, 2)
    t = torch.tensor([[100.0, 0.0], [0.0, 100.0]])  # P_t = I (to float precision)
    from methods.mlkd import at_most_median, batch_consistency, class_consistency
    # P_s = 0.5 everywhere: P_s^T P_s = P_s P_s^T = [[.5, .5], [.5, .5]]; P_t^T P_t = I
    # squared differences: 0.25 on each of 4 entries = 1.0; / C (= 2) and / B (= 2) -> 0.5
    assert float(class_consistency(s, t, 1.0)) == pytest.approx(0.5, rel=1e-6)
    assert float(batch_consistency(s, t, 1.0)) == pytest.approx(0.5, rel=1e-6)
    # the mask keeps every sample: the official (scalar * mask).mean() is the fraction at or below the median
    assert float(at_most_median(torch.tensor([0.9, 0.1, 0.5, 0.7]))) == 0.5  # median 0.6: 0.1, 0.5
    assert float(at_most_median(torch.tensor([0.9, 0.1, 0.5]))) == pytest.approx(2 / 3)  # median 0.5
    assert float(at_most_median(torch.tensor([0.3, 0.3, 0.3, 0.9]))) == 0.75  # ties: more than half


def test_mlkd_median_mask_keeps_float64_median_sample():
    # 9 samples whose median is the sample 0.7 itself: np.percentile (the official code's threshold, float64)
    # keeps 5 of 9. A float32 threshold rounds 0.7 down to 0.69999999 and would keep only 4.
    from methods.mlkd import at_most_median
    values = np.array([0.1, 0.2, 0.3, 0.4, 0.7, 0.8, 0.85, 0.9, 0.95])
    official = float((values <= np.percentile(values, 50)).mean())
    assert official == 5 / 9
    ours = at_most_median(torch.tensor(values, dtype=torch.float64))
    assert ours.dtype == torch.float64 and float(ours) == official
    # the shuffled batch and float32 inputs: float32's own median sample is kept too
    assert float(at_most_median(torch.tensor(values[::-1].copy(), dtype=torch.float64))) == 5 / 9
    assert float(at_most_median(torch.tensor(values, dtype=torch.float32))) == pytest.approx(5 / 9)


# --- the strong view ------------------------------------------------------------------------------
PIL_OPS = {
    "AutoContrast": lambda im, v: ImageOps.autocontrast(im),
    "Brightness": lambda im, v: ImageEnhance.Brightness(im).enhance(v),
    "Color": lambda im, v: ImageEnhance.Color(im).enhance(v),
    "Contrast": lambda im, v: ImageEnhance.Contrast(im).enhance(v),
    "Equalize": lambda im, v: ImageOps.equalize(im),
    "Identity": lambda im, v: im,
    "Posterize": lambda im, v: ImageOps.posterize(im, max(1, int(v))),
    "Rotate": lambda im, v: im.rotate(v),
    "Sharpness": lambda im, v: ImageEnhance.Sharpness(im).enhance(v),
    "ShearX": lambda im, v: im.transform(im.size, Image.AFFINE, (1, v, 0, 0, 1, 0)),
    "ShearY": lambda im, v: im.transform(im.size, Image.AFFINE, (1, 0, 0, v, 1, 0)),
    "Solarize": lambda im, v: ImageOps.solarize(im, v),
    "TranslateX": lambda im, v: im.transform(im.size, Image.AFFINE, (1, 0, v * im.size[0], 0, 1, 0)),
    "TranslateY": lambda im, v: im.transform(im.size, Image.AFFINE, (1, 0, 0, 0, 1, v * im.size[1])),
}


@pytest.mark.parametrize("op_name", [name for name, *_ in RANDAUGMENT_OPS])
def test_randaugment_ops_match_pil(op_name):
    """Each tensor op against MLKD's PIL op on random 32x32 RGB images: photometric ops within one grey
    level (rounding), geometric ones exact (rotation: a handful of pixels on the diagonal rounding)."""
    _, op, low, high = next(o for o in RANDAUGMENT_OPS if o[0] == op_name)
    rng = np.random.default_rng(0)
    differing = total = worst = 0
    for i in range(12):
        a = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        if i % 2:
            a = (a // 4 + 60).astype(np.uint8)  # low contrast, where autocontrast and equalize matter
        v = low + (high - low) * rng.random()
        want = np.asarray(PIL_OPS[op_name](Image.fromarray(a), v)).astype(int)
        got = op(torch.from_numpy(a).permute(2, 0, 1).contiguous(), v).permute(1, 2, 0).numpy().astype(int)
        diff = np.abs(want - got)
        worst, differing, total = max(worst, diff.max()), differing + (diff > 0).sum(), total + diff.size
    if op_name == "Solarize":  # the top of the range: PIL inverts nothing above 255
        a = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        got = op(torch.from_numpy(a).permute(2, 0, 1).contiguous(), 255.9).permute(1, 2, 0).numpy()
        assert (got == np.asarray(ImageOps.solarize(Image.fromarray(a), 255.9))).all()
    if op_name == "Rotate":
        assert differing / total < 0.002
    else:
        assert worst <= 1


def test_cutout_matches_pil_rectangle():
    from PIL import ImageDraw

    a = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    side = 0.3 * 32
    x0, y0 = int(max(0, 10 - side / 2)), int(max(0, 20 - side / 2))
    im = Image.fromarray(a).copy()
    ImageDraw.Draw(im).rectangle((x0, y0, min(32, x0 + side), min(32, y0 + side)), (125, 123, 114))
    got = cutout(torch.from_numpy(a).permute(2, 0, 1).contiguous(), 0.3, 10, 20).permute(1, 2, 0).numpy()
    assert (np.asarray(im) == got).all()


@pytest.fixture(scope="module")
def digits():
    return digits_slice(96, flip=True)


@pytest.fixture(scope="module")
def teacher():
    return random_teacher()


def test_a_view_depends_only_on_seed_view_epoch_step(digits):
    index = torch.arange(16)
    fast = FastPaths().resolve(CPU)

    class R:  # the two things draw_views reads of a run
        def __init__(self, seed):
            self.seed, self.method = seed, type("M", (), {"views": ("strong",)})()

    a = draw_views([R(0)], index, digits, CPU, 1, 2, None, fast)[0]["strong"][0]
    b = draw_views([R(0), R(0), R(5)], index, digits, CPU, 1, 2, None, fast)
    assert torch.equal(a, b[0]["strong"][0]) and not torch.equal(a, b[5]["strong"][0])
    assert not torch.equal(a, draw_views([R(0)], index, digits, CPU, 1, 3, None, fast)[0]["strong"][0])
    weak = digits.augment(digits.train_images[:16], torch.Generator().manual_seed(0))
    assert a.shape == weak.shape and a.dtype == weak.dtype and not torch.equal(a, weak)


def test_mlkd_in_a_cohort_equals_solo_bitwise_and_the_teacher_runs_once_per_view(digits, teacher):
    names = ["mlkd", "mlkd+ls", "kd", "vanilla"]
    calls = []
    runs = [make_run(m, digits, teacher) for m in names]
    real = teacher.forward_kd
    teacher.forward_kd = lambda x, preact=False: (calls.append(x.shape[0]), real(x, preact=preact))[1]
    try:
        cohort = train(runs, digits, teacher)
    finally:
        del teacher.forward_kd
    assert all(r.error is None for r in cohort)
    # per step: the weak batch and the strong view, once each for the four runs (3 batches of 32 x 2 epochs);
    # plus one pass over the 64 test images for the fidelity metrics, once for the cohort
    assert sorted(calls) == [32] * (2 * 3 * 2) + [64]
    for m, in_cohort in zip(names, cohort):
        assert_bitwise_equal(in_cohort, train([make_run(m, digits, teacher)], digits, teacher)[0])
    terms = cohort[0].history[-1]["losses"]
    assert set(terms) == {"ce", "ce_strong", "kd_weak", "kd_strong", "cc", "bc"} and all(v > 0 for v in terms.values())


def test_mlkd_resumes_bitwise(digits, teacher):
    full = train([make_run("mlkd", digits, teacher)], digits, teacher)[0]
    saved = {}
    gen = torch.Generator().manual_seed(seed_for(0, "data"))

    def stop(epoch, runs):
        saved.update(run={k: v for k, v in runs[0].state_dict().items()}, gen=gen.get_state())
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train([make_run("mlkd", digits, teacher)], digits, teacher, on_epoch_end=stop, generator=gen)
    import copy
    resumed = make_run("mlkd", digits, teacher)
    resumed.load_state_dict(copy.deepcopy(saved["run"]))
    train([resumed], digits, teacher, generator=torch.Generator().set_state(saved["gen"]))
    assert_bitwise_equal(full, resumed)


def test_views_are_declared_and_mlkd_is_approximate_under_ddp(capsys, tmp_path):
    """DDP draws the view (tests/test_distributed.py), but MLKD's batch- and class-level terms couple the batch."""
    assert method_views("mlkd") == ("strong",) and method_views("kd") == () and method_views("mlkd+ls") == ("strong",)
    code = distributed_main(["--methods", "mlkd", "--pairs", "resnet8:resnet8", "--seeds", "0",
                             "--results", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: mlkd is not exact under DDP (")
    assert err[0].endswith("); pass --allow-approximate to train it anyway") and not (tmp_path / "r").exists()


def test_mlkd_record_names_its_views_and_passes(capsys, tmp_path):
    from kdcore import records
    res = tmp_path / "results"
    assert main(["--results", str(res), "--methods", "mlkd", "--pairs", "resnet8:resnet8", "--seeds", "0",
                 "--epochs", "1", "--set", "teacher_train.epochs=1", "--quiet", "--no-report"]) == 0
    grid = next(p for p in res.iterdir() if p.name != "teachers")
    rec = records.read_json(records.record_path(grid, "mlkd__resnet8-resnet8__s0"))
    assert rec["status"] == "complete"
    assert rec["cost"]["views"] == ["strong"] and rec["cost"]["teacher_forwards_per_step"] == 2


def ref_dkd_terms(s, t, y, T):
    """logit-standardization-KD ``mdistiller/distillers/DKD.py`` dkd_loss, unweighted, transcribed with the
    official 1000-mask: TCKD on the binary split, NCKD with the target logit pushed down by 1000."""
    gt = torch.nn.functional.one_hot(y, s.shape[1]).float()
    ps, pt = torch.softmax(s / T, 1), torch.softmax(t / T, 1)
    bs = torch.stack([(ps * gt).sum(1), (ps * (1 - gt)).sum(1)], 1)
    bt = torch.stack([(pt * gt).sum(1), (pt * (1 - gt)).sum(1)], 1)
    tckd = (bt * (torch.log(bt) - torch.log(bs))).sum() * T ** 2 / s.shape[0]
    lt = torch.log_softmax(t / T - 1000.0 * gt, 1)
    ls_ = torch.log_softmax(s / T - 1000.0 * gt, 1)
    nckd = (lt.exp() * (lt - ls_)).sum() * T ** 2 / s.shape[0]
    return tckd, nckd


def test_dkd_plus_ls_matches_their_standardised_dkd_loss():
    hp = validate_method("dkd+ls", {"dkd": {"beta": 2.0}})["dkd"]  # a per-pair beta is multiplied, not replaced
    assert (hp["T"], hp["alpha"], hp["beta"]) == (2.0, 9.0, 18.0)
    (s, t, _, _), y = _logits(3)
    method = build_method("dkd+ls", _ctx())
    a = s.clone().requires_grad_(True)
    ours = method.losses(_out(a), _out(t), Batch(s, y, y))
    b = s.clone().requires_grad_(True)
    ref = ref_dkd_terms(ref_normalize(b), ref_normalize(t), y, 2.0)
    for term, r in zip(("dkd_tckd", "dkd_nckd"), ref):
        assert torch.allclose(ours[term], r, rtol=RTOL)
    (ga,) = torch.autograd.grad(9.0 * ours["dkd_tckd"] + 18.0 * ours["dkd_nckd"], a)
    (gb,) = torch.autograd.grad(9.0 * ref[0] + 18.0 * ref[1], b)
    assert torch.allclose(ga, gb, rtol=RTOL, atol=1e-6)


def test_ctkd_plus_ls_standardises_at_the_learned_temperature():
    """The formula at rtol 1e-5 with our method run in float64 (at T ~ 15.6 the KL is ~3e-3 of log-probabilities
    ~2: float32 itself is only good to ~1e-5 there, for any implementation), and float32 within 1e-4."""
    assert validate_method("ctkd+ls")["ctkd"]["alpha"] == 9.0
    (s, t, _, _), y = _logits(4)
    T0 = 1 + 20 / (1 + math.exp(-1))  # CTKD's Global_T starts at theta = 1
    for dtype, rtol, atol in ((torch.float64, RTOL, 1e-12), (torch.float32, 1e-4, 1e-6)):
        method = build_method("ctkd+ls", _ctx()).to(dtype)
        a = s.to(dtype).requires_grad_(True)
        out = method.losses(_out(a), _out(t.to(dtype)), Batch(s, y, y))
        assert float(out["ctkd_T"]) == pytest.approx(T0, rel=1e-6)
        b = s.double().requires_grad_(True)
        ref = ref_kd(b, t.double(), float(out["ctkd_T"]), stand=True)  # CTKD/distiller_zoo/KD.py DistillKL_logit_stand
        assert torch.allclose(out["ctkd"].double(), ref, rtol=rtol)
        (ga,) = torch.autograd.grad(out["ctkd"], a)
        (gb,) = torch.autograd.grad(ref, b)
        assert torch.allclose(ga.double(), gb, rtol=rtol, atol=atol)


def test_list_names_the_modifier_and_set_reaches_it(capsys, tmp_path):
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "modifier: ls {'base_temp': 2.0, 'kd_weight': 9.0}, written after the method: " in out
    assert "kd+ls" in out and "dkd+ls" in out and "mlkd+ls" in out and "ctkd+ls" in out
    assert main(["--results", str(tmp_path / "r"), "--methods", "kd,kd+ls", "--pairs", "resnet8:resnet8",
                 "--set", "ls.kd_weight=3", "--dry-run"]) == 0
    code = main(["--results", str(tmp_path / "r"), "--methods", "kd+ls", "--set", "ls.base_temp=0", "--quiet"])
    assert code == 2 and capsys.readouterr().err.strip() == "error: ls.base_temp must be > 0, got 0.0"


def test_a_failing_view_fails_the_runs_that_asked_for_it_not_their_cohort(digits, teacher):
    class BrokenViews:
        """digits whose strong view cannot be drawn (a bug, a missing dependency): everything else works."""

        def __getattr__(self, name):
            return getattr(digits, name)

        def view(self, name, index, generator, device):
            raise RuntimeError("strong view unavailable")

    data = BrokenViews()
    runs = train([make_run(m, digits, teacher) for m in ("mlkd", "kd")], data, teacher)
    assert isinstance(runs[0].error, RuntimeError) and str(runs[0].error) == "strong view unavailable"
    assert runs[0].error_at == (0, 0)
    assert runs[1].error is None and len(runs[1].history) == 2  # kd trained on, unaffected
    assert_bitwise_equal(runs[1], train([make_run("kd", digits, teacher)], digits, teacher)[0])
