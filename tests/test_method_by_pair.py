"""Per-pair method values in a preset (``[method_by_pair."T:S".method]``): mdistiller tunes DKD's beta
per pair, TTM/WTTM tune gamma and beta per pair. They are data, resolved once per pair, recorded in
each run's config, and the command line (``--set dkd.beta=4``) wins over them for every pair.
"""
from __future__ import annotations

import pytest

from kdcore import records
from kdcore.config import load_preset, method_overrides
from benchmarks.run import build_parser, main, resolve

PRESET = '''
description = "per-pair test"
dataset = "digits"
methods = ["kd"]
pairs = ["resnet8:resnet8", "resnet20:resnet8"]
seeds = [0]
[train]
epochs = 1
[teacher_train]
epochs = 1
[method.kd]
T = 3.0
[method_by_pair."resnet20:resnet8".kd]
T = 6.0
alpha = 0.5
[method_by_pair."vgg13:vgg8".kd]
T = 9.0
'''


def _preset(tmp_path, text=PRESET):
    path = tmp_path / "pp.toml"
    path.write_text(text)
    return str(path)


def test_each_pair_resolves_its_own_values(tmp_path):
    cfg = resolve(build_parser().parse_args(["--preset", _preset(tmp_path)]))
    kd = {pair: methods["kd"]["kd"] for pair, methods in cfg["resolved_methods"].items()}
    assert kd == {"resnet8:resnet8": {"T": 3.0, "gamma": 0.1, "alpha": 0.9},
                  "resnet20:resnet8": {"T": 6.0, "gamma": 0.1, "alpha": 0.5}}
    assert method_overrides(cfg, "vgg13:vgg8") == {"kd": {"T": 9.0}}  # a pair the grid does not run: unused


def test_the_command_line_wins_over_per_pair_values(tmp_path):
    cfg = resolve(build_parser().parse_args(["--preset", _preset(tmp_path), "--set", "kd.T=2"]))
    assert {p: m["kd"]["kd"]["T"] for p, m in cfg["resolved_methods"].items()} == \
        {"resnet8:resnet8": 2.0, "resnet20:resnet8": 2.0}
    assert cfg["resolved_methods"]["resnet20:resnet8"]["kd"]["kd"]["alpha"] == 0.5  # other keys stay


def test_bad_per_pair_values_exit_2_before_any_work(capsys, tmp_path):
    cases = [
        (PRESET.replace("alpha = 0.5", "alpha = -1.0"), "error: kd.alpha must be >= 0, got -1.0"),
        (PRESET.replace("alpha = 0.5", "alfa = 0.5"),
         "error: unknown hyperparameter kd.alfa; kd has: T, alpha, gamma"),
        (PRESET.replace('"vgg13:vgg8"', '"vgg13"'),
         "error: bad pair 'vgg13': expected teacher:student, e.g. resnet32x4:resnet8x4"),
        (PRESET.replace('[method_by_pair."vgg13:vgg8".kd]\nT = 9.0', '[method_by_pair."vgg13:vgg8"]\nT = 9.0'),
         'error: method_by_pair."vgg13:vgg8": expected tables of method hyperparameters, '
         'e.g. [method_by_pair."vgg13:vgg8".dkd] beta = 6.0'),
    ]
    for text, message in cases:
        results = tmp_path / "results"
        code = main(["--preset", _preset(tmp_path, text), "--results", str(results), "--quiet"])
        err = capsys.readouterr().err.strip().splitlines()
        assert (code, err) == (2, [message])
        assert not results.exists()


def test_runs_train_and_record_their_pairs_values(capsys, tmp_path):
    results = tmp_path / "results"
    assert main(["--preset", _preset(tmp_path), "--results", str(results), "--quiet", "--no-report"]) == 0
    grid = results / "pp"
    for pair, T, alpha in (("resnet8-resnet8", 3.0, 0.9), ("resnet20-resnet8", 6.0, 0.5)):
        rec = records.read_json(records.record_path(grid, f"kd__{pair}__s0"))
        assert rec["status"] == "complete"
        assert rec["config"]["method"] == {"kd": {"T": T, "gamma": 0.1, "alpha": alpha}}
        # the term was weighted with the pair's alpha (epoch means of weighted and raw terms: float32 sums)
        last = rec["history"][-1]
        assert last["weighted_losses"]["kd"] == pytest.approx(alpha * last["losses"]["kd"], rel=1e-6)


def test_per_pair_values_are_part_of_the_grids_identity(tmp_path):
    a = resolve(build_parser().parse_args(["--preset", _preset(tmp_path)]))
    b = resolve(build_parser().parse_args(["--preset", _preset(tmp_path, PRESET.replace("T = 6.0", "T = 5.0"))]))
    assert a["grid_base"]["protocol"] != b["grid_base"]["protocol"]


def test_the_cifar100_preset_loads_its_per_pair_values():
    cfg = load_preset("cifar100")
    for pair in cfg.get("method_by_pair", {}):
        assert pair in cfg["pairs"], pair


def test_a_runs_identity_ignores_other_methods_values(tmp_path):
    """Tuning one method (``--set ab.init_epochs=3``) must not send every other method's records to stale."""
    from benchmarks.grid import GridRunner, RunnerOptions, RunSpec

    def fp(*extra):
        args = build_parser().parse_args(["--preset", _preset(tmp_path), "--methods", "kd,ft", "--results",
                                          str(tmp_path / "r"), *extra])
        runner = GridRunner(resolve(args), RunnerOptions.from_namespace(args))
        return {m: runner.fingerprint_of(RunSpec(m, "resnet8", "resnet8", 0)) for m in ("kd", "ft")}

    base, other, own = fp(), fp("--set", "ft.init_epochs=3"), fp("--set", "kd.alpha=0.5")
    assert other["kd"] == base["kd"] and other["ft"] != base["ft"]
    assert own["kd"] != base["kd"] and own["ft"] == base["ft"]


def test_the_runner_takes_frozen_options_not_the_cli_namespace(tmp_path):
    import dataclasses

    from benchmarks.grid import GridRunner, RunnerOptions

    args = build_parser().parse_args(["--preset", _preset(tmp_path), "--results", str(tmp_path / "r"), "--quiet"])
    with pytest.raises(TypeError, match="GridRunner takes RunnerOptions"):
        GridRunner(resolve(args), args)
    options = RunnerOptions.from_namespace(args)
    assert options.quiet and options.results == str(tmp_path / "r") and options.checkpoint_every == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.quiet = False


# --- the cifar100 preset against RepDistiller's training protocol --------------------------------------
# HobbitLong/RepDistiller: train_student.py:44 (batch 64), :46 (240 epochs), :50-54 (lr 0.05, decay at
# 150,180,210 by 0.1, wd 5e-4, momentum 0.9), :93-94 (lr 0.01 for MobileNetV2/ShuffleV1/ShuffleV2);
# train_teacher.py:31-40 and :55-56 (the same recipe for the teachers); helper/util.py:16-22
# (adjust_learning_rate: steps = sum(epoch > milestones), epoch 1-based); helper/pretrain.py:22-27 (the
# init stage's lr: 0.01 for `factor` with resnet/wrn students, else opt.learning_rate).
SMALL_LR_STUDENTS = ("MobileNetV2", "ShuffleV1", "ShuffleV2")
RESNET_WRN = ("resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
              "resnet8x4", "resnet32x4", "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2")


def _repdistiller_lr(model: str) -> float:
    return 0.01 if model in SMALL_LR_STUDENTS else 0.05


def test_the_cifar100_preset_recipes_are_repdistillers():
    from kdcore.config import student_recipe, teacher_recipe

    cfg = load_preset("cifar100")
    assert len(cfg["pairs"]) == 13 and cfg["dataset"] == "cifar100"
    for pair in cfg["pairs"]:
        teacher, student = pair.split(":")
        for model, recipe in ((student, student_recipe(cfg, student)), (teacher, teacher_recipe(cfg, teacher))):
            assert (recipe.epochs, recipe.batch_size, recipe.lr, recipe.momentum, recipe.weight_decay,
                    recipe.lr_decay_epochs, recipe.lr_decay_rate) == \
                (240, 64, _repdistiller_lr(model), 0.9, 5e-4, [150, 180, 210], 0.1), (pair, model)
            # adjust_learning_rate at the start of 1-based epoch e: lr * 0.1 ** sum(e > [150, 180, 210])
            for e in (1, 150, 151, 180, 181, 210, 211, 240):
                steps = sum(e > m for m in (150, 180, 210))
                assert recipe.lr_at(e - 1) == pytest.approx(_repdistiller_lr(model) * 0.1 ** steps,
                                                            rel=1e-12), (pair, model, e)


def test_the_cifar100_preset_pretraining_stages_use_repdistillers_learning_rates():
    """ab, fsp and ft pre-train 30 epochs (train_student.py:47 --init_epochs 30); ab's and fsp's stage runs at
    the student's lr (Stage.lr None: the recipe's), ft's at 0.01 for resnet/wrn students, else the student's."""
    from kdcore.config import student_recipe
    from methods import method_stages, validate_method

    cfg = load_preset("cifar100")
    for pair in cfg["pairs"]:
        student = pair.split(":")[1]
        lr = student_recipe(cfg, student).lr
        over = method_overrides(cfg, pair)
        for name in ("ab", "fsp", "ft"):
            (stage,) = method_stages(name, validate_method(name, over))
            stage_lr = stage.lr if stage.lr is not None else lr
            want = 0.01 if (name == "ft" and student in RESNET_WRN) else _repdistiller_lr(student)
            assert (stage.epochs, stage_lr) == (30, want), (pair, name)
