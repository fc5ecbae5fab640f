"""Declared pre-training stages (RepDistiller's init_epochs) and the three methods that use them: ab, ft, fsp.

Golden values come from independent transcriptions of HobbitLong/RepDistiller, written below with loops:
``distiller_zoo/AB.py`` (ABLoss), ``distiller_zoo/FSP.py`` (FSP), ``distiller_zoo/FT.py`` (FactorTransfer),
``models/util.py`` (Paraphraser, Translator) and ``helper/pretrain.py`` (which modules train, in which mode).
"""
from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from kdcore import records
from benchmarks.run import main
from methods import (BuildContext, ModelOutput, UnknownMethodError, build_method, method_stages, validate_method)
from methods.ab import ab_layer_loss
from methods.fsp import fsp_loss
from methods.ft import ft_loss
from cohorts import digits_slice, make_run, random_teacher, train
from test_harness import assert_bitwise_equal

CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parents[1]
RTOL = 1e-5


# --- golden values -------------------------------------------------------------------------------
def ref_ab(source, target, margin=1.0):  # ABLoss.criterion_alternative_l2, element by element
    total = 0.0
    for s, t in zip(source.flatten().tolist(), target.flatten().tolist()):
        if s > -margin and t <= 0:
            total += (s + margin) ** 2
        if s <= margin and t > 0:
            total += (s - margin) ** 2
    return total


def test_ab_hinge_hand_computed_and_transcribed():
    # s = (-2, 0, 0.5, 2), t = (-1, -1, 1, 1), m = 1:
    #   s=-2: not > -1 -> 0;  s=0, t<=0: (0+1)^2 = 1;  s=0.5, t>0, s<=1: (0.5-1)^2 = 0.25;  s=2 > 1: 0
    s, t = torch.tensor([-2.0, 0.0, 0.5, 2.0]), torch.tensor([-1.0, -1.0, 1.0, 1.0])
    assert float(ab_layer_loss(s, t, 1.0)) == 1.25
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(3, 4, 5, 5, generator=g) * 2, torch.randn(3, 4, 5, 5, generator=g)
    assert float(ab_layer_loss(s, t, 1.0)) == pytest.approx(ref_ab(s, t), rel=RTOL)


def ref_ab_torch(source, target, margin=1.0):  # criterion_alternative_l2 element by element, autograd-able
    total = source.new_zeros(())
    for s, t in zip(source.flatten(), target.flatten()):
        if s > -margin and t <= 0:
            total = total + (s + margin) ** 2
        if s <= margin and t > 0:
            total = total + (s - margin) ** 2
    return total


def test_ab_stage_loss_value_and_gradient_match_abloss():
    """The whole init-stage loss against ABLoss.forward: per layer 2^(i-n+1) * l_i / B / 1000 * 3, summed
    (distiller_zoo/AB.py), here with identity connectors (equal shapes, models/util.py Connector)."""
    g = torch.Generator().manual_seed(3)
    shapes = [(2, 3, 4, 4), (2, 5, 2, 2)]
    s_maps = [torch.randn(*sh, generator=g) * 2 for sh in shapes]
    t_maps = [torch.randn(*sh, generator=g) for sh in shapes]

    def out(maps):
        return ModelOutput(torch.zeros(2, 10), [torch.zeros(2, 3, 4, 4)] + maps, torch.zeros(2, 5),
                           preact_features=[torch.zeros(2, 3, 4, 4)] + maps)

    method = build_method("ab", BuildContext(out(s_maps), out(t_maps), 10, torch.zeros(4, dtype=torch.long)))
    assert all(isinstance(m, torch.nn.Identity) for m in method.connector.maps)
    a = [x.clone().requires_grad_(True) for x in s_maps]
    ours = method.stage_losses("init", out(a), out(t_maps), None)["ab"]
    b = [x.clone().requires_grad_(True) for x in s_maps]
    n = len(b)
    ref = sum(2 ** (i - n + 1) * ref_ab_torch(bi, ti) / 2 / 1000 * 3 for i, (bi, ti) in enumerate(zip(b, t_maps)))
    assert torch.allclose(ours, ref, rtol=RTOL)
    for ga, gb in zip(torch.autograd.grad(ours, a), torch.autograd.grad(ref, b)):
        assert torch.allclose(ga, gb, rtol=RTOL, atol=1e-9)


def ref_fsp_matrix(bot, top):  # FSP.compute_fsp for one pair, with explicit loops over channels
    if bot.shape[2] > top.shape[2]:
        bot = F.adaptive_avg_pool2d(bot, (top.shape[2], top.shape[2]))
    elif bot.shape[2] < top.shape[2]:
        top = F.adaptive_avg_pool2d(top, (bot.shape[2], bot.shape[2]))
    b, ci, cj = bot.shape[0], bot.shape[1], top.shape[1]
    out = torch.zeros(b, ci, cj, dtype=bot.dtype)
    for i in range(ci):
        for j in range(cj):
            out[:, i, j] = (bot[:, i] * top[:, j]).flatten(1).mean(1)
    return out


def test_fsp_value_and_gradient_match_the_transcription():
    g = torch.Generator().manual_seed(1)
    shapes = [(2, 3, 8, 8), (2, 3, 8, 8), (2, 5, 4, 4)]
    s = [torch.randn(*sh, generator=g).requires_grad_(True) for sh in shapes]
    t = [torch.randn(*sh, generator=g) for sh in shapes]
    ours = fsp_loss(s, t)
    s2 = [x.detach().clone().requires_grad_(True) for x in s]
    ref = sum(((ref_fsp_matrix(a, b) - ref_fsp_matrix(c, d)) ** 2).mean()
              for a, b, c, d in zip(s2[:-1], s2[1:], t[:-1], t[1:]))
    assert torch.allclose(ours, ref, rtol=RTOL)
    for ga, gb in zip(torch.autograd.grad(ours, s), torch.autograd.grad(ref, s2)):
        assert torch.allclose(ga, gb, rtol=RTOL, atol=1e-7)
    # hand case: one position, bot = (1, 2), top = (3,): G = [[3], [6]] vs zeros -> mean(9, 36) = 22.5
    bot, top = torch.tensor([1.0, 2.0]).view(1, 2, 1, 1), torch.tensor([3.0]).view(1, 1, 1, 1)
    assert float(fsp_loss([bot, top], [torch.zeros_like(bot), torch.zeros_like(top)])) == 22.5


def test_ft_factor_loss_matches_the_transcription():
    g = torch.Generator().manual_seed(2)
    fs = torch.randn(3, 6, 8, 8, generator=g).requires_grad_(True)
    ft = torch.randn(3, 4, 4, 4, generator=g)

    def factor(f):  # FactorTransfer.factor: F.normalize(f.pow(2).mean(1).view(B, -1)), p = 2, eps 1e-12
        v = f.pow(2).mean(1).reshape(f.shape[0], -1)
        return v / v.norm(dim=1, keepdim=True).clamp_min(1e-12)

    ref_s = fs.detach().clone().requires_grad_(True)
    ref = (factor(F.adaptive_avg_pool2d(ref_s, (4, 4))) - factor(ft)).abs().mean()
    ours = ft_loss(fs, ft)
    assert torch.allclose(ours, ref, rtol=RTOL)
    (ga,), (gb,) = torch.autograd.grad(ours, fs), torch.autograd.grad(ref, ref_s)
    assert torch.allclose(ga, gb, rtol=RTOL, atol=1e-8)


def test_ft_modules_have_repdistillers_shapes():
    def out(c, h):
        return ModelOutput(torch.zeros(2, 10), [torch.zeros(2, c, h, h)], torch.zeros(2, c))
    m = build_method("ft", BuildContext(out(64, 8), out(256, 8), 10, torch.zeros(4, dtype=torch.long)))
    # Paraphraser(t_shape, k=0.5): encoder 256 -> 256 -> 128 -> 128, decoder 128 -> 128 -> 256 -> 256, no BN
    enc = [(c.in_channels, c.out_channels) for c in m.paraphraser.encoder if isinstance(c, torch.nn.Conv2d)]
    dec = [(c.in_channels, c.out_channels) for c in m.paraphraser.decoder if isinstance(c, torch.nn.ConvTranspose2d)]
    assert enc == [(256, 256), (256, 128), (128, 128)] and dec == [(128, 128), (128, 256), (256, 256)]
    assert not any(isinstance(x, torch.nn.BatchNorm2d) for x in m.paraphraser.modules())
    # Translator(s_shape, t_shape, k=0.5): 64 -> 64 -> 128 -> 128, with BN
    tr = [(c.in_channels, c.out_channels) for c in m.translator.encoder if isinstance(c, torch.nn.Conv2d)]
    assert tr == [(64, 64), (64, 128), (128, 128)]
    assert sum(isinstance(x, torch.nn.BatchNorm2d) for x in m.translator.modules()) == 3
    # the paraphraser trains only in its stage; the translator only in the main one
    assert {id(p) for p in m.trainable_parameters()} == {id(p) for p in m.translator.parameters()}


def test_stages_are_declared_and_staged_methods_do_not_combine():
    assert [(s.name, s.epochs, s.lr) for s in method_stages("ft", validate_method("ft"))] == [("init", 30, 0.01)]
    assert [(s.name, s.epochs, s.lr) for s in method_stages("ab", validate_method("ab"))] == [("init", 30, None)]
    assert method_stages("ab", validate_method("ab", {"ab": {"init_epochs": 0}})) == []
    assert method_stages("kd", validate_method("kd")) == []
    with pytest.raises(UnknownMethodError, match="'ft' trains in stages .* cannot be combined"):
        validate_method("ft+kd")


# --- the harness runs the stages -------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    return digits_slice(96, flip=True)


@pytest.fixture(scope="module")
def teacher():
    return random_teacher()


def staged_run(m, data, teacher, epochs=2, init_epochs=1):
    """``make_run`` with the pre-training stage shortened to ``init_epochs`` for ab, ft, fsp."""
    return make_run(m, data, teacher, epochs=epochs,
                    overrides={m: {"init_epochs": init_epochs}} if m in ("ab", "ft", "fsp") else None)


def test_a_cohort_with_staged_methods_equals_solo_runs_bitwise(digits, teacher):
    names = ["ab", "ft", "fsp", "kd", "vanilla"]
    cohort = train([staged_run(m, digits, teacher, init_epochs=1 + (m == "ft")) for m in names], digits, teacher)
    assert all(r.error is None for r in cohort)
    for m, in_cohort in zip(names, cohort):
        assert_bitwise_equal(in_cohort, train([staged_run(m, digits, teacher, init_epochs=1 + (m == "ft"))],
                                              digits, teacher)[0])
    ft = cohort[1]
    assert [(h.get("stage"), h["epoch"]) for h in ft.history] == [("init", 1), ("init", 2), (None, 1), (None, 2)]
    assert ft.epochs_done == 4 and cohort[3].epochs_done == 2
    assert set(ft.history[0]["losses"]) == {"ft_paraphrase"} and ft.history[0]["lr"] == 0.01
    assert set(ft.history[-1]["losses"]) == {"ce", "ft"}


def test_a_stage_trains_only_what_it_declares(digits, teacher):
    """RepDistiller's init(): model_s.eval(), init_modules.train(); only init_modules are in the optimizer."""
    snaps = {}

    def snap(epoch, runs):
        if epoch == 0:
            snaps.update({r.method.name: copy.deepcopy({"model": r.model.state_dict(), "method": r.method.state_dict()})
                          for r in runs})

    runs = [staged_run(m, digits, teacher) for m in ("ab", "ft", "fsp")]
    before = {r.method.name: copy.deepcopy({"model": r.model.state_dict(), "method": r.method.state_dict()})
              for r in runs}
    train(runs, digits, teacher, on_epoch_end=snap)

    def changed(name, part):
        return {k for k, v in snaps[name][part].items() if not torch.equal(v, before[name][part][k])}

    # ft: the paraphraser alone moves; the student (weights and BN statistics) and the translator do not
    assert changed("ft", "model") == set() and changed("ft", "method") and \
        all(k.startswith("paraphraser.") for k in changed("ft", "method"))
    for name in ("ab", "fsp"):  # the student's feature modules move (BN statistics too); its classifier does not
        moved = changed(name, "model")
        assert moved and not any(k.startswith("fc.") for k in moved), (name, moved)
        assert any(k.endswith("running_mean") for k in moved)  # the feature modules were in train mode
    # resnet8 -> resnet8: every connector is the identity (equal channels and sizes): ab has no parameters
    assert not list(runs[0].method.parameters()) and changed("fsp", "method") == set()


def test_grid_records_main_stage_metrics_and_logs_the_stage(capsys, tmp_path):
    res = tmp_path / "r"
    assert main(["--results", str(res), "--methods", "ft", "--pairs", "resnet8:resnet8", "--seeds", "0",
                 "--epochs", "2", "--set", "ft.init_epochs=1", "--set", "teacher_train.epochs=1", "--quiet",
                 "--no-report"]) == 0
    grid = next(p for p in res.iterdir() if p.name != "teachers")
    rec = records.read_json(records.record_path(grid, "ft__resnet8-resnet8__s0"))
    assert [(h.get("stage"), h["epoch"]) for h in rec["history"]] == [("init", 1), (None, 1), (None, 2)]
    main_hist = rec["history"][1:]
    assert rec["metrics"]["epochs"] == 2 and rec["metrics"]["top1_last"] == main_hist[-1]["test_top1"]
    assert rec["metrics"]["top1_best"] == max(h["test_top1"] for h in main_hist)
    lines = (grid / "runs" / "ft__resnet8-resnet8__s0.metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3  # every epoch logged once, the stage's included


def _spawn(results: Path, grid: str, kill_in_write: int | None = None) -> subprocess.Popen:
    args = ["benchmarks.run", "--results", str(results), "--grid", grid, "--methods", "ft,kd", "--pairs",
            "resnet8:resnet8", "--seeds", "0", "--epochs", "2", "--set", "ft.init_epochs=2",
            "--set", "teacher_train.epochs=1", "--quiet", "--no-report"]
    entry = ["-m"] if kill_in_write is None else [str(ROOT / "tests" / "kill_hook.py"), str(kill_in_write)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(torch.get_num_threads())}
    return subprocess.Popen([sys.executable, *entry, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_a_run_killed_inside_its_stage_resumes_bitwise(tmp_path):
    results = tmp_path / "r"
    ref = _spawn(results, "ref")
    assert ref.wait(timeout=300) == 0, ref.stderr.read()
    # checkpoint writes: ft after stream epoch 1 (1), kd after 1 (2), ft after 2 (3, killed halfway): ft
    # resumes from its checkpoint after stream epoch 1, inside its 2-epoch init stage
    proc = _spawn(results, "killed", kill_in_write=3)
    proc.wait(timeout=300)
    assert proc.returncode == -signal.SIGKILL
    ckpt = torch.load(results / "killed" / "runs" / "ft__resnet8-resnet8__s0.ckpt.pt", weights_only=False)
    assert ckpt["run"]["epochs_done"] == 1 and ckpt["run"]["history"][-1]["stage"] == "init"
    resumed = _spawn(results, "killed")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    for rid in ("ft__resnet8-resnet8__s0", "kd__resnet8-resnet8__s0"):
        a = torch.load(results / "ref" / "runs" / f"{rid}.student.pt", weights_only=False)
        b = torch.load(results / "killed" / "runs" / f"{rid}.student.pt", weights_only=False)
        for part in ("student", "method"):
            assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), (rid, part)
        ra, rb = (records.read_json(records.record_path(results / g, rid)) for g in ("ref", "killed"))
        strip = [{k: v for k, v in h.items() if "time" not in k and k != "images_per_s"} for h in ra["history"]]
        assert strip == [{k: v for k, v in h.items() if "time" not in k and k != "images_per_s"}
                         for h in rb["history"]]


def test_a_pair_the_method_cannot_run_is_not_applicable_not_failed(capsys, tmp_path):
    """FSP needs equal channel counts (RepDistiller raises): the grid records why, exits 0, does not retry it,
    and the report shows n/a with the reason instead of a failure."""
    res = tmp_path / "r"
    argv = ["--results", str(res), "--methods", "fsp,vanilla", "--pairs", "resnet8:wrn_16_2", "--seeds", "0",
            "--epochs", "1", "--set", "teacher_train.epochs=1", "--set", "fsp.init_epochs=1", "--quiet"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "fsp__resnet8-wrn_16_2__s0: not applicable: fsp needs the student's and teacher's feature maps" in err
    grid = next(p for p in res.iterdir() if p.name != "teachers")
    rec = records.read_json(records.record_path(grid, "fsp__resnet8-wrn_16_2__s0"))
    assert rec["status"] == "not_applicable" and rec["error"]["type"] == "PairNotSupported"
    report = (grid / "report.md").read_text()
    assert "1 complete, 0 failed, 0 missing, 1 not applicable" in report
    assert "| fsp      |" in report and "n/a" in report.split("| fsp      |")[1].splitlines()[0]
    assert "n/a: the method cannot run this pair, as its reference cannot: fsp on resnet8 → wrn_16_2: fsp needs" \
        in report
    assert main(argv) == 0  # not retried
    assert "2 runs, 2 already complete, 0 to run" in capsys.readouterr().err
