"""benchmarks.api: kdbench's methods inside someone else's training loop (docs/library.md, "Using kdbench as a library").

The documented loop runs as written (extracted by its marker); the total equals ``StudentRun.step``'s bit for
bit; a user's own KDModel and a plain classifier work; what the API cannot do fails in one line.
"""
from __future__ import annotations

import copy
import math
import re
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

import benchmarks.api as api
from benchmarks.api import Distillation, LogitsModel
from kdcore.data import InMemoryData
from kdcore.models import create_model
from benchmarks.teachers import import_teacher
from kdcore.train import StudentRun, draw_views
from kdcore.recipe import FastPaths, Recipe
from kdcore import KDModel, ModelOutput
from methods import HyperparameterError, UnknownMethodError, list_methods, method_needs, method_views, modified_methods

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
MARKER = "<!-- library-loop: tests/test_api.py execs the python block below -->"


def readme_loop() -> str:
    text = (ROOT / "docs" / "library.md").read_text()
    assert text.count(MARKER) == 1, "docs/library.md: the library loop's marker must appear exactly once"
    m = re.match(r"\s*```python\n(.*?)\n```", text.split(MARKER, 1)[1], re.S)
    assert m, "docs/library.md: a ```python block must follow the library loop's marker"
    return m.group(1)


def test_the_readme_loop_runs_and_trains_the_student_and_the_method(monkeypatch, capsys):
    code = readme_loop()
    assert len(code.splitlines()) <= 30  # a complete loop that still reads as a snippet
    made = []

    class Recording(Distillation):  # the documented Distillation, remembering where it started
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.initial_student = copy.deepcopy(self.student.state_dict())
            self.initial_method = [p.detach().clone() for p in self.parameters()]
            made.append(self)

    monkeypatch.setattr(api, "Distillation", Recording)
    namespace: dict = {}
    exec(compile(code, "docs/library.md (library loop)", "exec"), namespace)
    (distill,) = made
    history = namespace["history"]
    assert len(history) == namespace["epochs"] * len(namespace["loader"]) and all(map(math.isfinite, history))
    after = distill.student.state_dict()
    assert all(not torch.equal(v, after[k]) for k, v in distill.initial_student.items()
               if k.endswith(".weight")), "every weight of the student trains"
    assert distill.parameters() and all(not torch.equal(a, b) for a, b in zip(distill.initial_method,
                                                                              distill.parameters()))
    assert next(distill.teacher.parameters()).requires_grad is False
    epochs = namespace["epochs"]
    assert sum(history[-len(history) // epochs:]) < sum(history[:len(history) // epochs]), \
        f"the cross-entropy did not go down: {history}"
    # what it prints shows a student learning: the cross-entropy from about ln 10 down, the top-1 up
    printed = re.findall(r"epoch (\d): cross-entropy ([\d.]+), train top-1 (\d+)%", capsys.readouterr().out)
    assert [int(e) for e, _, _ in printed] == list(range(epochs))
    (_, ce_first, top1_first), (_, ce_last, top1_last) = printed[0], printed[-1]
    assert float(ce_first) > 2.0 > 1.5 > float(ce_last) and int(top1_last) >= int(top1_first) + 30, printed


def test_the_readme_loops_teacher_line_loads_a_repdistiller_checkpoint(tmp_path):
    """The commented call that loads "your trained teacher" works on RepDistiller's own file layout (a dict with
    "model", "epoch" and an optimizer state holding a numpy float64 lr, which torch.load(weights_only=True) and
    a bare ``torch.load(...)["model"]`` into a fresh model do not read as they stand)."""
    call = re.search(r'# your trained one: (import_teacher\(("\w+"), "([^"]+)", num_classes=(\d+)\))',
                     readme_loop())
    assert call, "docs/library.md: the library loop names import_teacher(arch, file, num_classes=...) for the teacher"
    arch, name, classes = call.group(2).strip('"'), call.group(3), int(call.group(4))
    trained = create_model(arch, num_classes=classes)
    torch.save({"model": trained.state_dict(), "epoch": 240, "best_acc": np.float64(70.1),
                "optimizer": {"param_groups": [{"lr": np.float64(0.0005)}], "state": {}}}, tmp_path / name)
    teacher = eval(call.group(1).replace(name, str(tmp_path / name)), {"import_teacher": import_teacher})
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in trained.state_dict().items())


# --- the same total as the harness --------------------------------------------------------------
def _data(n: int = 64, num_classes: int = 10) -> InMemoryData:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    y = torch.arange(n) % num_classes
    return InMemoryData("fake", x, y, x[:8], y[:8], num_classes, (0.5,) * 3, (0.25,) * 3)


@pytest.mark.parametrize("name", ["kd", "crd+kd", "dkd", "kd+ls", "mlkd", "mlkd+ls"])
def test_the_total_is_studentrun_steps_bit_for_bit(name):
    """Three steps in epoch 2 of 4 (dkd's warm-up weight is 3/20 there, not its first epoch's 1/20): the
    harness's StudentRun on copies of the same student and method, and Distillation with the same seed
    and an SGD like StudentRun's, give equal totals at every step and equal students after."""
    data = _data()
    recipe = Recipe(epochs=4, batch_size=8)
    torch.manual_seed(0)
    distill = Distillation(name, "resnet8", "resnet8", num_classes=10, train_labels=data.train_labels, seed=3)
    run = StudentRun(name, copy.deepcopy(distill.student), copy.deepcopy(distill.method), recipe, seed=3)
    optimizer = torch.optim.SGD(list(distill.student.parameters()) + distill.parameters(), lr=recipe.lr,
                                momentum=recipe.momentum, weight_decay=recipe.weight_decay, foreach=True)
    epoch, steps_per_epoch = 2, math.ceil(data.num_train / recipe.batch_size)
    run.begin_epoch(epoch)
    distill.student.train()
    batches = data.epoch_batches(recipe.batch_size, torch.Generator().manual_seed(1), CPU)
    for step, (x, y, index) in zip(range(3), batches):
        with torch.no_grad():  # what train_cohort hands every run: the frozen teacher's output
            t_out = distill.teacher.forward_kd(x, preact=run.method.needs_preact)
        if not run.method.needs_features:
            t_out = t_out.logits_only()
        # mlkd's strong view, as train_cohort draws it, and the teacher on it
        drawn = draw_views([run], index, data, CPU, epoch, step, distill.teacher, FastPaths().resolve(CPU),
                           run.method.needs_preact, not run.method.needs_features).get(run.seed, {})
        expected = run.step(x, y, index, t_out, data, CPU, epoch, step, drawn)
        total, terms = distill.loss(x, y, index, views={k: v[0] for k, v in drawn.items()},
                                    epoch=epoch + step / steps_per_epoch, epochs=recipe.epochs)
        assert torch.equal(total.detach(), expected), (name, step, float(total.detach()), float(expected))
        weights = distill.weights()
        assert set(terms) <= set(weights) and "ce" in terms
        assert torch.equal(total.detach(), sum(weights[k] * v for k, v in terms.items() if weights[k] != 0))
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
    if name == "dkd":
        assert distill.method.progress.epoch == 2.25 and distill.weights()["dkd_nckd"] == pytest.approx(8.0 * 3 / 20)
    for (k, a), b in zip(run.model.state_dict().items(), distill.student.state_dict().values()):
        assert torch.equal(a, b), k
    for (k, a), b in zip(run.method.state_dict().items(), distill.method.state_dict().values()):
        assert torch.equal(a, b), k  # crd's memory banks and embeddings too


# --- your own models -------------------------------------------------------------------------------
class TinyNet(KDModel):
    """A user's model: stem + 3 stages, RepDistiller's feature layout, pre-activation maps on request."""

    def __init__(self, width: int, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.stages = nn.ModuleList(nn.Sequential(nn.Conv2d(width * 2 ** i, width * 2 ** (i + 1), 3, stride=2,
                                                            padding=1), nn.BatchNorm2d(width * 2 ** (i + 1)))
                                    for i in range(3))
        self.fc = nn.Linear(width * 8, num_classes)

    def forward_kd(self, x, preact=False):
        feats = [F.relu(self.stem(x))]
        pre = [feats[0]]
        for stage in self.stages:
            pre.append(stage(feats[-1]))
            feats.append(F.relu(pre[-1]))
        embedding = feats[-1].mean((2, 3))
        return ModelOutput(self.fc(embedding), feats, embedding, preact_features=pre if preact else None,
                           classifier=self.fc, embedding_map=feats[-1])


@pytest.mark.parametrize("name", ["fitnet", "at", "rkd", "crd+kd", "vid"])
def test_a_users_own_kdmodel_trains_with_a_feature_method(name):
    torch.manual_seed(0)
    teacher, student = TinyNet(8), TinyNet(4)
    labels = torch.arange(16) % 10
    distill = Distillation(name, teacher, student, num_classes=10, train_labels=labels, input_shape=(3, 16, 16))
    assert distill.student is student and distill.teacher is teacher and not teacher.training
    optimizer = torch.optim.SGD(list(student.parameters()) + distill.parameters(), lr=0.1)
    before = copy.deepcopy(student.state_dict())
    x = torch.randn(8, 3, 16, 16)
    total, terms = distill.loss(x, labels[:8], torch.arange(8))
    assert math.isfinite(float(total.detach())) and set(terms) > {"ce"}
    optimizer.zero_grad()
    total.backward()
    assert all(p.grad is not None for p in distill.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    optimizer.step()
    assert not torch.equal(before["stem.weight"], student.stem.weight)


LOGIT_METHODS = [m for m in list_methods() + modified_methods()
                 if not method_needs(m, "needs_features") and not method_needs(m, "needs_preact")
                 and not method_views(m)]


@pytest.mark.parametrize("name", LOGIT_METHODS)
def test_a_plain_classifier_works_with_every_logits_only_method(name):
    """Plain ``module(x) -> logits`` models, wrapped in LogitsModel; triplet's extra samples via ``fetch``."""
    torch.manual_seed(0)
    images, labels = torch.randn(32, 3, 8, 8), torch.arange(32) % 10

    def plain():
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))

    student = plain()
    distill = Distillation(name, plain(), student, num_classes=10, train_labels=labels, input_shape=(3, 8, 8),
                           fetch=lambda index: images[index])
    assert distill.student is student and isinstance(distill._student, LogitsModel)
    total, terms = distill.loss(images[:8], labels[:8], torch.arange(8), epoch=1.5, epochs=4)
    assert math.isfinite(float(total.detach())) and "ce" in terms
    total.backward()
    assert student[1].weight.grad is not None


def test_a_timm_student():
    name = next((n for n in ("test_resnet", "resnet10t") if timm.list_models(n)), None)
    if name is None:
        pytest.skip("no tiny timm model available")
    torch.manual_seed(0)
    distill = Distillation("at+kd", "resnet8", f"timm:{name}", num_classes=10)
    total, terms = distill.loss(torch.randn(4, 3, 32, 32), torch.arange(4))
    assert set(terms) == {"ce", "at", "kd"} and math.isfinite(float(total.detach()))


# --- what it cannot do, in one line ----------------------------------------------------------------
def _one_line(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize("name", ["ab", "ft", "fsp"])
def test_a_pre_training_stage_is_studentrun_stage_steps_bit_for_bit(name):
    """Two steps of the method's stage, then two main steps: Distillation (stage_loss over stage_parameters with
    the stage's SGD, then loss) and StudentRun on copies give equal totals at every step and equal states."""
    data = _data()
    recipe = Recipe(epochs=2, batch_size=8)
    torch.manual_seed(0)
    distill = Distillation(name, "resnet8", "resnet8", num_classes=10, overrides={name: {"init_epochs": 1}})
    run = StudentRun(name, copy.deepcopy(distill.student), copy.deepcopy(distill.method), recipe, seed=0)
    [stage] = distill.stages
    assert (stage.name, stage.epochs) == ("init", 1) and run.stage_epochs == 1
    lr = stage.lr if stage.lr is not None else recipe.lr
    stage_sgd = torch.optim.SGD(distill.stage_parameters("init"), lr=lr, momentum=recipe.momentum,
                                weight_decay=recipe.weight_decay, foreach=True)
    main_sgd = torch.optim.SGD(list(distill.student.parameters()) + distill.parameters(), lr=recipe.lr,
                               momentum=recipe.momentum, weight_decay=recipe.weight_decay, foreach=True)
    batches = list(zip(range(2), data.epoch_batches(recipe.batch_size, torch.Generator().manual_seed(1), CPU)))
    for epoch, optimizer in ((0, stage_sgd), (1, main_sgd)):  # stream epoch 0 is the stage's
        run.begin_epoch(epoch)
        if epoch == 1:
            distill.student.train()  # the main training starts
        for step, (x, y, index) in batches:
            with torch.no_grad():
                t_out = distill.teacher.forward_kd(x, preact=run.method.needs_preact)
            expected = run.step(x, y, index, t_out, data, CPU, epoch, step)
            if epoch == 0:
                total, terms = distill.stage_loss(x, y, index, stage="init")
                assert not distill.student.training and "ce" not in terms
            else:
                total, terms = distill.loss(x, y, index, epoch=step / 8, epochs=recipe.epochs)
            assert torch.equal(total.detach(), expected), (name, epoch, step)
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
    for (k, a), b in zip(run.model.state_dict().items(), distill.student.state_dict().values()):
        assert torch.equal(a, b), k
    for (k, a), b in zip(run.method.state_dict().items(), distill.method.state_dict().values()):
        assert torch.equal(a, b), k


def test_a_missing_view_or_stage_is_named_in_one_line():
    mlkd = Distillation("mlkd", "resnet8", "resnet8", num_classes=10)
    x, y = torch.zeros(2, 3, 32, 32), torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError) as e:  # its view comes from the user's loop
        mlkd.loss(x, y)
    assert _one_line(e) == ("mlkd also trains on the view(s) strong of each batch: pass loss(x, y, "
                            "views={'strong': images}), the samples of x augmented as that view (kdbench's: "
                            "kdcore.data.augment.VIEWS)")
    with pytest.raises(ValueError) as e:
        Distillation("ft", "resnet8", "resnet8", num_classes=10).stage_loss(x, y, stage="warmup")
    assert _one_line(e) == "ft has no stage 'warmup'; its stages: ['init']"
    with pytest.raises(ValueError) as e:
        mlkd.stage_parameters("init")
    assert _one_line(e) == "mlkd has no stage 'init'; its stages: none"
    with pytest.raises(UnknownMethodError, match="unknown method 'hinton'"):
        Distillation("hinton", "resnet8", "resnet8", num_classes=10)


def test_what_is_missing_is_named_in_one_line():
    plain = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    with pytest.raises(TypeError) as e:
        Distillation("crd+kd", "resnet8", plain, num_classes=10)
    assert "student Sequential is a plain nn.Module, but crd+kd reads feature maps" in _one_line(e)
    assert "forward_kd" in str(e.value)
    with pytest.raises(ValueError) as e:
        Distillation("crd", "resnet8", "resnet8", num_classes=10)
    assert "crd reads the training set's labels: pass train_labels=" in _one_line(e)
    with pytest.raises(ValueError, match="kd needs a teacher"):
        Distillation("kd", None, "resnet8", num_classes=10)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    assert math.isfinite(float(Distillation("vanilla", None, "resnet8", num_classes=10).loss(x, y)[0].detach()))
    labels = torch.arange(8) % 10
    crd = Distillation("crd", "resnet8", "resnet8", num_classes=10, train_labels=labels)
    with pytest.raises(ValueError) as e:
        crd.loss(x, y)
    assert "crd reads each sample's dataset index: call loss(x, y, index)" in _one_line(e)
    triplet = Distillation("triplet", "resnet8", "resnet8", num_classes=10, train_labels=labels)
    with pytest.raises(ValueError) as e:
        triplet.loss(x, y)
    assert "pass fetch=" in _one_line(e)
    with pytest.raises(ValueError, match="pass epoch and epochs together"):
        triplet.loss(x, y, epoch=1.0)


@pytest.mark.parametrize("method,overrides,message", [
    ("kd", {"kd": {"T": float("inf")}}, "kd.T must be a finite number > 0, got inf"),
    ("ctkd", {"ctkd": {"decay_max": float("nan")}}, "ctkd.decay_max must be a finite number, got nan"),
    ("kd", {"kd": {"T": -1.0}}, "kd.T must be > 0, got -1.0"),
])
def test_hyperparameters_are_finite_numbers_in_range(method, overrides, message):
    """The ranges refuse inf and NaN (a "> 0" bound alone would let inf through), for the library too."""
    with pytest.raises(HyperparameterError) as e:
        Distillation(method, "resnet8", "resnet8", num_classes=10, overrides=overrides)
    assert _one_line(e) == message
